"""A stack as an lm-evaluation-harness model: ``--model fslm``.

:class:`FslmLM` answers lm-eval's three request types with a whole stack:

``generate_until``
    Every stage runs; the final stage generates with the request's ``until``
    stop strings and ``max_gen_toks``.
``loglikelihood`` (all multiple-choice tasks)
    The upstream stages (all but the last) run once per document, in batches,
    not once per answer choice. The final stage then scores each continuation
    after its own prompt, built from the context and the upstream messages,
    with its adapter active. Returns ``(logprob, is_greedy)``. Partial-scoring
    tasks (WinoGrande): see :mod:`.partial_scoring`.
``loglikelihood_rolling``
    The final stage's model (with its adapter) scores the text.

The final stage's prompt is, by default (``final_prompt=stage``), exactly what
that stage reads when the stack runs: its instruction and filled template laid
out by its backend (chat template where the model has one). With
``final_prompt=plain`` it is the filled template as plain text; for a
single-stage stack with template ``{prompt}`` that is lm-eval's own prompt, so
scores equal lm-eval's ``hf`` model on the same weights.

The upstream traces of every document are kept (:meth:`FslmLM.document_traces`)
so a person can read what the stack wrote before it chose an answer.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

# lm-eval fills its model registry lazily only while the registry is empty;
# import its own models first so registering ``fslm`` does not hide ``hf``.
import lm_eval.models  # noqa: F401
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from ..api.backends import TokenizedBackend
from ..declarations import Stack, with_dtype
from ..errors import InputError
from ..files import atomic_write_text, safe_file_name
from ..logs import get_logger
from ..messages import Message, Trace
from ..runtime import (
    BoundStack,
    BoundStage,
    bind_stack,
    check_stack,
    render_stage_prompt,
    run_stack,
    stage_input,
)
from ..runtime.decoding import cut_at_stop
from ..runtime.stack_choice import resolve_stack
from ..runtime.stage_cache import StageCache, adapter_identity, model_identity, score_key
from ..runtime.tool_runs import run_tool
from .deferral import Deferring
from .model_args import (
    DEFAULT_BATCH_SIZE,
    IGNORED_MODEL_ARGS,
    LM_EVAL_ARGUMENTS,
    flag,
    parse_batch_size,
    request_settings,
)
from .partial_scoring import final_prompts, upstream_prompts

FINAL_PROMPT_MODES = ("stage", "plain")

log = get_logger(__name__)


@register_model("fslm")
class FslmLM(Deferring, LM):
    """An fslm stack evaluated by lm-evaluation-harness.

    :param stack: a :class:`Stack`, or the path of a stack file or folder.
    :param decomposition: a registered decomposition to build on ``model``.
    :param model: model id for ``decomposition``; alone, the model is evaluated by itself.
    :param model_path: local folder of the model's weights (offline use).
    :param batch_size: inputs per backend call (int, numeric string or ``auto``).
    :param final_prompt: ``stage`` (the final stage's prompt as it runs) or ``plain``.
    :param seed: seeds sampling stages before each upstream run.
    :param trace_dir: if given, ``traces_<task>.json`` files are kept up to date there
        (with lm-eval's command line, point it at ``--output_path``).
    :param stage_cache: upstream stages read what they wrote before for the same input from fslm's stage
        cache and add to it (``True``, the default), or always generate (``False``).
    :param dtype: ``auto``, ``float32``, ``bfloat16`` or ``int8`` in place of the stack's own ``dtype`` (None keeps it).
    """

    def __init__(
        self,
        stack: Stack | str | os.PathLike | None = None,
        decomposition: str | None = None,
        model: str | None = None,
        model_path: str | os.PathLike | None = None,
        batch_size: int | str | None = DEFAULT_BATCH_SIZE,
        max_batch_size: int | str | None = None,
        device: str | None = None,
        final_prompt: str = "stage",
        seed: int | None = 0,
        trace_dir: str | os.PathLike | None = None,
        stage_cache: bool | str = True,
        dtype: str | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        unexpected = sorted(set(unknown) - IGNORED_MODEL_ARGS)
        if unexpected:
            raise InputError(
                f"model_args: unknown argument(s) {unexpected} for the fslm model; it takes stack, decomposition, "
                "model, model_path, batch_size, max_batch_size, device, final_prompt, seed, trace_dir, stage_cache, "
                "dtype"
            )
        if final_prompt not in FINAL_PROMPT_MODES:
            raise InputError(
                f"model_args.final_prompt: expected one of {list(FINAL_PROMPT_MODES)}, got {final_prompt!r}"
            )
        self.stack = with_dtype(
            resolve_stack(stack, decomposition, model, model_path, model_alone=True, arguments=LM_EVAL_ARGUMENTS),
            dtype or None,  # lm-eval's command line may pass an empty value
            field="model_args.dtype",
        )
        self.batch_size = parse_batch_size(batch_size, max_batch_size)
        self.final_prompt = final_prompt
        self.seed = None if seed is None else int(seed)
        self.trace_dir = Path(trace_dir).expanduser().resolve() if trace_dir else None
        self.stage_cache = StageCache() if flag(stage_cache, "stage_cache") else None
        self.accelerator = None
        self._setup_processes(device)
        # Everything but the weights is checked now; the models load at the first request, so lm-eval's
        # command line reports a bad task or a missing data file before spending time on them.
        check_stack(self.stack)
        self.final_stage = self.stack.final_stage
        upstream = self.stack.stages[:-1]
        self.upstream_stack = self.stack.model_copy(update={"stages": upstream, "fallback": None}) if upstream else None
        self._setup_deferral(
            batch_size=batch_size,
            max_batch_size=max_batch_size,
            device=device,
            final_prompt=final_prompt,
            seed=seed,
            stage_cache=stage_cache,
        )
        self._upstream_traces: dict[str, Trace] = {}
        self._documents: dict[str, dict[int, list[Trace]]] = defaultdict(dict)
        self.upstream_runs = 0  # (stage, context) executions, for cost reports and tests
        self.upstream_seconds = 0.0

    # Processes (accelerate launch) -----------------------------------------------

    def _setup_processes(self, device: str | None) -> None:
        """Shard documents across processes started by ``accelerate launch``, as lm-eval's own models do."""
        import torch

        self._device = torch.device(device) if device else None
        if self._device is not None and self._device.type == "cuda" and not torch.cuda.is_available():
            # lm-eval's command line asks for cuda:0 unless told otherwise; its hf model falls back the same way.
            log.info("cuda is not available; the models stay where they are", device=device)
            self._device = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator

            # Without a GPU, accelerate shards over CPU processes (gloo) only when told to use the CPU.
            self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
            self._rank = self.accelerator.process_index
            self._world_size = self.accelerator.num_processes
            if device is None:
                self._device = self.accelerator.device
            log.info("evaluating in parallel", rank=self._rank, world_size=self._world_size)

    @cached_property
    def bound(self) -> BoundStack:
        """The stack with its models loaded (at first use)."""
        bound = bind_stack(self.stack)
        if self._device is not None:
            backends = {id(item.backend): item.backend for item in bound.stages.values() if item.backend is not None}
            for backend in backends.values():
                if isinstance(backend, TokenizedBackend):
                    backend.move_to(self._device)
        return bound

    @property
    def final(self) -> BoundStage:
        return self.bound.stages[self.final_stage.name]

    @property
    def device(self):
        return self._device if self._device is not None else self.final.backend.device

    def all_gather(self, tensor):
        if self.accelerator is None:
            return tensor
        return self.accelerator.gather(tensor)

    def gather_object(self, obj, dst: int = 0):
        if self.accelerator is None:
            return [obj]
        import torch.distributed

        gathered = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj=obj, object_gather_list=gathered, dst=dst)
        return gathered

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    # Upstream stages -----------------------------------------------------------------

    def upstream_traces(self, contexts: Sequence[str], progress: bool = False) -> list[Trace]:
        """Traces holding the upstream stages' messages for each context; each distinct context runs once."""
        missing = [c for c in dict.fromkeys(contexts) if c not in self._upstream_traces]
        runnable = [c for c in missing if c.strip()]
        if self.upstream_stack is not None and runnable:
            started = time.perf_counter()
            traces = run_stack(
                self.upstream_stack,
                runnable,
                batch_size=self.batch_size,
                seed=self.seed,
                progress=progress,
                cache=self.stage_cache,
            )
            self.upstream_seconds += time.perf_counter() - started
            self.upstream_runs += sum(len(trace.messages) for trace in traces)
            for context, trace in zip(runnable, traces):
                trace.answer = None  # the answer is the final stage's, written later
                self._upstream_traces[context] = trace
        for context in missing:
            # A blank context gives the upstream stages nothing to read.
            self._upstream_traces.setdefault(context, Trace(stack=self.stack.name, prompt=context))
        return [self._upstream_traces[context] for context in contexts]

    def final_prompt_for(self, trace: Trace) -> str:
        """The final stage's input for one trace: its rendered prompt (``stage``) or filled template (``plain``)."""
        if self.final_prompt == "plain":
            return stage_input(self.final_stage, trace, self.bound.formats)
        return render_stage_prompt(self.bound, self.final_stage, trace)

    def _continuation_for(self, prompt: str, continuation: str) -> str:
        # A rendered chat prompt ends where the assistant's reply starts (after a
        # newline); the reply does not open with the space lm-eval's continuations carry.
        if self.final_prompt == "stage" and prompt[-1:].isspace() and continuation.strip():
            return continuation.lstrip(" ")
        return continuation

    def _remember(self, requests: Sequence, traces: Sequence[Trace]) -> None:
        for request, trace in zip(requests, traces):
            if request.task_name is None or request.doc_id is None:
                continue
            kept = self._documents[request.task_name].setdefault(request.doc_id, [])
            # One trace per distinct context of a document; a later run of the same context replaces it.
            kept[:] = [existing for existing in kept if existing.prompt != trace.prompt] + [trace]

    def _show_progress(self, disable_tqdm: bool) -> bool:
        return not disable_tqdm and self.rank == 0

    # lm-eval requests ----------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        if not requests:
            return []
        self._check_scorable()
        pairs = [request.args for request in requests]
        read = upstream_prompts(requests) if self.upstream_stack is not None else [context for context, _ in pairs]
        traces = self.upstream_traces(read, progress=self._show_progress(disable_tqdm))
        self._remember(requests, traces)
        prompts = final_prompts(traces, [context for context, _ in pairs], self.final_prompt_for)
        scored = [
            (prompt, self._continuation_for(prompt, continuation)) for prompt, (_, continuation) in zip(prompts, pairs)
        ]
        options = {"add_special_tokens": True} if self.final_prompt == "plain" else {}
        results = self._scores(scored, options)
        results = self._defer_uncertain_choices(requests, results)
        for pair, result in zip(pairs, results):
            self.cache_hook.add_partial("loglikelihood", pair, result)
        self._write_trace_dir(requests)
        return results

    def _check_scorable(self) -> None:
        """Log-likelihoods need a model at the end of the stack; a tool stage there writes text only."""
        if self.final_stage.tool is not None:
            raise InputError(
                f"stack {self.stack.name!r} ends with a tool stage ({self.final_stage.tool}), which gives no "
                "log-likelihoods: it answers generate_until tasks (e.g. local_gsm8k), not multiple-choice ones"
            )

    def _scores(self, scored: list[tuple[str, str]], options: dict) -> list[tuple[float, bool]]:
        """The final stage's scores of (prompt, continuation) pairs, reading and writing the stage cache."""
        final = self.final
        if self.stage_cache is None:
            return final.backend.loglikelihood(scored, [final.adapter_name] * len(scored), self.batch_size, **options)
        model, adapter = model_identity(final.backend.spec), adapter_identity(final.stage.adapter)
        keys = [score_key(model, adapter, context, continuation, options) for context, continuation in scored]
        known = self.stage_cache.get_scores(keys)
        todo = [index for index, key in enumerate(keys) if key not in known]
        if todo:
            fresh = final.backend.loglikelihood(
                [scored[index] for index in todo], [final.adapter_name] * len(todo), self.batch_size, **options
            )
            computed = {keys[index]: result for index, result in zip(todo, fresh)}
            self.stage_cache.put_scores(computed)
            known.update(computed)
        return [known[key] for key in keys]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        if not requests:
            return []
        self._check_scorable()
        texts = [request.args[0] for request in requests]
        results = self.final.backend.loglikelihood_rolling(
            texts, [self.final.adapter_name] * len(texts), self.batch_size
        )
        for text, result in zip(texts, results):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), result)
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        if not requests:
            return []
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[json.dumps(request.args[1], sort_keys=True, default=str)].append(index)
        for indices in groups.values():
            batch = [requests[i] for i in indices]
            settings = request_settings(self.final_stage.generation, batch[0].args[1])
            upstream = self.upstream_traces([r.args[0] for r in batch], progress=self._show_progress(disable_tqdm))
            if self.final.tool is not None:
                inputs = [stage_input(self.final_stage, trace, self.bound.formats) for trace in upstream]
                generations, _ = run_tool(self.final.tool, self.final_stage, inputs, self.stage_cache)
                generations = [replace(g, text=cut_at_stop(g.text, settings.stop)) for g in generations]
            else:
                generations = self.final.backend.generate(
                    [self.final_prompt_for(trace) for trace in upstream],
                    [self.final.adapter_name] * len(batch),
                    settings,
                    self.batch_size,
                )
            finished = []
            for index, trace, generation in zip(indices, upstream, generations):
                trace = trace.model_copy(deep=True)
                trace.messages.append(
                    Message(
                        stage=self.final_stage.name,
                        text=generation.text,
                        fields=self.final.format.parse(generation.text),
                        model=self.final_stage.model or f"tool:{self.final_stage.tool}",
                        adapter=str(self.final_stage.adapter) if self.final_stage.adapter else None,
                        prompt_tokens=generation.prompt_tokens,
                        completion_tokens=generation.completion_tokens,
                        latency_s=generation.latency_s,
                        batch_size=generation.batch_size,
                    )
                )
                trace.answer = generation.text
                finished.append(trace)
                results[index] = generation.text
            self._defer_uncertain_generations(batch, indices, finished, results)
            for index, request in zip(indices, batch):
                self.cache_hook.add_partial("generate_until", request.args, results[index])
            self._remember(batch, finished)
        self._write_trace_dir(requests)
        return results  # type: ignore[return-value]

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        raise InputError(
            "the fslm model lays out each stage's prompt itself (model_args final_prompt=stage|plain); "
            "run without --apply_chat_template"
        )

    def get_model_info(self) -> dict:
        return {
            "fslm_stack": self.stack.name,
            "fslm_stages": [
                f"{stage.name}:{stage.model}{'+adapter' if stage.adapter else ''}" for stage in self.stack.stages
            ],
            "fslm_final_prompt": self.final_prompt,
        }

    # Traces and cost -------------------------------------------------------------------

    def document_traces(self, task: str) -> list[dict]:
        """Per document of ``task`` (in doc order): its traces, one per distinct context it had."""
        documents = self._documents.get(task, {})
        confidence = self._confidence.get(task, {})
        return [
            {
                "doc_id": doc_id,
                "traces": [trace.model_dump(mode="json") for trace in documents[doc_id]],
                **confidence.get(doc_id, {}),
            }
            for doc_id in sorted(documents)
        ]

    def task_cost(self, task: str, documents: list[dict] | None = None) -> dict:
        """Documents of ``task`` and the tokens the upstream stages generated for them.

        ``documents`` (as :meth:`document_traces` returns them, e.g. gathered
        from every process) replaces this process's own.
        """
        documents = self.document_traces(task) if documents is None else documents
        upstream = {stage.name for stage in self.stack.stages[:-1]}
        per_document = [
            sum(m["completion_tokens"] for trace in doc["traces"] for m in trace["messages"] if m["stage"] in upstream)
            for doc in documents
        ]
        total = sum(per_document)
        cached = sum(bool(m.get("cached")) for doc in documents for trace in doc["traces"] for m in trace["messages"])
        deferred = {"deferred_documents": sum(doc.get("path") == "fallback" for doc in documents)}
        # Upstream stages once per document (not per option): reports compare stacks only on such results.
        once = {"upstream_once_per_document": all(len(doc["traces"]) <= 1 for doc in documents)}
        return {
            **(deferred if self.stack.fallback is not None else {}),
            **(once if upstream else {}),
            "documents": len(per_document),
            "upstream_stages": len(upstream),
            "upstream_cached_messages": cached,
            "upstream_completion_tokens": total,
            "upstream_tokens_per_document": round(total / len(per_document), 1) if per_document else 0.0,
        }

    def _write_trace_dir(self, requests: Sequence) -> None:
        if self.trace_dir is None:
            return
        suffix = f"_rank{self.rank}" if self.world_size > 1 else ""
        for task in sorted({request.task_name for request in requests if request.task_name}):
            self.write_traces(self.trace_dir, task, name=f"traces_{safe_file_name(task)}{suffix}.json")

    def write_traces(
        self, folder: str | os.PathLike, task: str, documents: list[dict] | None = None, name: str | None = None
    ) -> Path:
        """Write a task's document traces to ``<folder>/traces_<task>.json`` (atomically)."""
        path = Path(folder) / (name or f"traces_{safe_file_name(task)}.json")
        payload = {
            "stack": self.stack.name,
            "task": task,
            "documents": documents if documents is not None else self.document_traces(task),
        }
        atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False))
        return path
