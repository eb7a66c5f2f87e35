"""Score each stage of a stack on held-out distilled examples, to find the weak one.

Every stage is scored on its own: its input is built from the example's
*targets* for the stages it reads (as in training), so an upstream stage's
mistakes do not hide or excuse a downstream stage's. Evaluators come from the
registry (``register_evaluators``). Text evaluators (``token-f1``,
``exact-match``...) compare what the stage writes with its target; an
evaluator with a ``score_stage(job)`` method, such as the built-in
``target-loss``, gets the whole :class:`StageEvalJob` (model, inputs, targets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .backends import ModelPool
from .declarations import Stack
from .distillation import DistilledData
from .engine import BoundStack, bind_stack
from .errors import InputError
from .evaluators import Evaluator
from .logs import get_logger
from .plugins import Registry, get_registry

log = get_logger(__name__)


class StageEvalJob:
    """One stage's held-out examples: model inputs, targets, and (on demand) what the stage writes."""

    def __init__(
        self, bound: BoundStack, stage_name: str, pairs: Sequence[tuple[str, str]], batch_size: int, max_length: int
    ):
        item = bound.stages[stage_name]
        self.stage = item.stage
        self.backend = item.backend
        self.adapter_name = item.adapter_name
        self.prompts = [prompt for prompt, _ in pairs]
        self.references = [target for _, target in pairs]
        self.batch_size = batch_size
        self.max_length = max_length
        self._predictions: list[str] | None = None

    def predictions(self) -> list[str]:
        """The stage's own messages for the held-out inputs (generated once, with its adapter)."""
        if self._predictions is None:
            generations = self.backend.generate(
                self.prompts, [self.adapter_name] * len(self.prompts), self.stage.generation, self.batch_size
            )
            self._predictions = [generation.text for generation in generations]
        return self._predictions

    def encoded(self):
        from .training import encode_example

        return [encode_example(self.backend, p, t, self.max_length) for p, t in zip(self.prompts, self.references)]


class TargetLoss(Evaluator):
    """Mean loss per target token of the stage's model on its targets, with and without its adapter."""

    name = "target-loss"
    description = "Mean per-token loss of each stage's target given its input (lower is better); needs the model."

    def score(self, predictions, references):
        raise InputError(
            "evaluator 'target-loss' scores a stage's model on its targets, not texts; "
            "use it through fslm_core.stage_evaluation.evaluate_stages or `fslm train`"
        )

    def score_stage(self, job: StageEvalJob) -> dict[str, float]:
        from .training import mean_target_loss, require_transformers_backend

        require_transformers_backend(job.backend, job.stage.name)
        encoded = job.encoded()
        scores = {"target_loss": mean_target_loss(job.backend, job.adapter_name, encoded, job.batch_size)}
        if job.adapter_name is not None:
            scores["base_target_loss"] = mean_target_loss(job.backend, None, encoded, job.batch_size)
        return scores


def evaluate_stages(
    stack: Stack,
    distilled: DistilledData,
    example_ids: Sequence[int] | None = None,
    *,
    evaluators: Sequence[str] = ("target-loss", "token-f1"),
    stages: Sequence[str] | None = None,
    batch_size: int = 8,
    max_length: int = 512,
    registry: Registry | None = None,
    pool: ModelPool | None = None,
) -> dict[str, dict[str, float]]:
    """Stage name -> metric -> score, on the given distilled examples (default: all).

    Stages without targets in the data are left out.
    """
    from .training import stage_pairs

    registry = registry or get_registry()
    chosen = [registry.evaluator(name, field="evaluators") for name in evaluators]
    examples = distilled.examples()
    if example_ids is not None:
        wanted = set(example_ids)
        examples = [example for example in examples if example.example_id in wanted]
    if not examples:
        raise InputError("evaluation: no distilled examples to score")
    bound = bind_stack(stack, registry, pool)
    results: dict[str, dict[str, float]] = {}
    for stage in stack.stages:
        if stages is not None and stage.name not in stages:
            continue
        if stage.name not in distilled.stage_names:
            continue
        pairs = stage_pairs(bound, stage.name, examples)
        if not pairs:
            continue
        job = StageEvalJob(bound, stage.name, pairs, batch_size, max_length)
        scores: dict[str, float] = {}
        for evaluator in chosen:
            if hasattr(evaluator, "score_stage"):
                scores.update(evaluator.score_stage(job))
            else:
                scores.update(evaluator.score(job.predictions(), job.references))
        results[stage.name] = {
            name: round(value, 4) if math.isfinite(value) else value for name, value in scores.items()
        }
        log.info("stage evaluated", stage=stage.name, examples=len(pairs), **results[stage.name])
    return results


BUILTIN_STAGE_EVALUATORS = (TargetLoss(),)
