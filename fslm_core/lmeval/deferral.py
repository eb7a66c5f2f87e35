"""Cascades under lm-eval: the documents a stack is unsure of are scored or answered by its fallback.

:class:`Deferring` is the part of the ``fslm`` model (:class:`~.model.FslmLM`)
that records every document's confidence signals, and, when the stack has a
``fallback``, hands the documents below its threshold to the fallback, an
``fslm`` model of its own. Documents stay in lm-eval's order; each records
which path answered it and why (``path``, ``reason`` beside its traces).
"""

from __future__ import annotations

from collections import defaultdict
from functools import cached_property

from ..messages import Trace
from ..runtime.cascade import (
    DEFERRED,
    as_fallback_messages,
    choice_signals,
    decision,
    fallback_stack,
    generation_signal,
)
from ..stage_settings import GENERATION_SIGNALS


class Deferring:
    """Confidence records and deferral for :class:`~.model.FslmLM` (which sets ``stack``, ``final_stage``,
    ``_documents`` and ``bound``)."""

    def _setup_deferral(self, **fallback_options) -> None:
        # The fallback is evaluated as the stack is: same batch size, device, seed, prompt layout and cache.
        self._fallback_options = fallback_options
        self._confidence: dict[str, dict[int, dict]] = defaultdict(dict)  # task -> doc id -> signals, path, reason

    def load(self) -> None:
        """Load every model the stack (and its fallback) runs on now, not at the first request: timings then
        measure answering, not loading."""
        _ = self.bound
        if self.fallback is not None:
            self.fallback.load()

    @cached_property
    def fallback(self) -> Deferring | None:
        """The cascade's fallback as an lm-eval model of its own (loaded at its first deferred document)."""
        if self.stack.fallback is None:
            return None
        return type(self)(stack=fallback_stack(self.stack), **self._fallback_options)

    def _defer_uncertain_choices(self, requests, results: list[tuple[float, bool]]) -> list[tuple[float, bool]]:
        """Record each document's confidence in its choice; rescore the unsure ones with the fallback.

        A document's requests are its answer choices (lm-eval sends them together); requests without a
        document id stand alone, and a lone choice is never deferred.
        """
        documents: dict[tuple, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            key = (request.task_name, request.doc_id) if request.doc_id is not None else ("", -index - 1)
            documents[key].append(index)
        deferral = self.stack.fallback.scoring if self.stack.fallback is not None else None
        deferred: list[int] = []
        for (task, doc_id), indices in documents.items():
            signals = choice_signals([(requests[i].args[1], results[i][0]) for i in indices])
            record = {"signals": signals}
            if deferral is not None and len(indices) > 1:
                routed = decision(self.final_stage.name, signals[deferral.signal], deferral, self.stack.fallback.label)
                record.update(path="fallback" if routed.decision == DEFERRED else "stack", reason=routed.reason)
                if routed.decision == DEFERRED:
                    deferred.extend(indices)
            if task:
                self._confidence[task][doc_id] = record
        if not deferred:
            return results
        rescored = self.fallback.loglikelihood([requests[i] for i in deferred], disable_tqdm=True)
        results = list(results)
        for index, result in zip(deferred, rescored, strict=True):
            results[index] = result
        return results

    def _defer_uncertain_generations(self, batch, indices, traces: list[Trace], results: list) -> None:
        """Record each answer and how sure the final stage was of it; with a fallback, regenerate the unsure ones
        and those not of the answer form it asks for."""
        deferral = self.stack.fallback.generation if self.stack.fallback is not None else None
        deferred = []
        for position, (request, trace) in enumerate(zip(batch, traces)):
            record: dict = {
                "signals": {name: generation_signal(trace, name) for name in GENERATION_SIGNALS},
                "answer": trace.answer,
            }
            if deferral is not None:
                signal = record["signals"][deferral.signal] if deferral.signal is not None else None
                routed = decision(self.final_stage.name, signal, deferral, self.stack.fallback.label, trace.answer)
                trace.routing.append(routed)
                record.update(path="fallback" if routed.decision == DEFERRED else "stack", reason=routed.reason)
                if routed.decision == DEFERRED:
                    deferred.append(position)
            if request.task_name is not None and request.doc_id is not None:
                self._confidence[request.task_name][request.doc_id] = record
        if not deferred:
            return
        answers = self.fallback.generate_until([batch[position] for position in deferred], disable_tqdm=True)
        for position, answer in zip(deferred, answers, strict=True):
            results[indices[position]] = answer
            traces[position].answer = answer
            fallback_traces = self.fallback._documents.get(batch[position].task_name, {})
            for kept in fallback_traces.get(batch[position].doc_id, [])[-1:]:
                traces[position].messages.extend(as_fallback_messages(kept.messages))
