"""Score each stage of a stack on held-out distilled examples, to find the weak one.

Every stage is scored on its own: its input is built from the example's
*targets* for the stages it reads (as in training), so an upstream stage's
mistakes do not hide or excuse a downstream stage's. Evaluators come from the
registry (``register_evaluators``). Text evaluators (``token-f1``,
``exact-match``...) compare what the stage writes with its target; a
:class:`~fslm_core.api.StageScorer`, such as the built-in ``target-loss``, gets
the whole :class:`StageScoreJob` (model, inputs, targets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..api.evaluators import StageJob, StageScorer
from ..declarations import Stack
from ..distillation.distilled_data import DistilledData
from ..errors import InputError
from ..logs import get_logger
from ..plugins import Registry, get_registry
from ..runtime import BoundStack, bind_stack
from ..runtime.pool import ModelPool
from .examples import stage_pairs

log = get_logger(__name__)


class StageScoreJob(StageJob):
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
        if self._predictions is None:
            generations = self.backend.generate(
                self.prompts, [self.adapter_name] * len(self.prompts), self.stage.generation, self.batch_size
            )
            self._predictions = [generation.text for generation in generations]
        return self._predictions


def score_stages(
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
        job = StageScoreJob(bound, stage.name, pairs, batch_size, max_length)
        scores: dict[str, float] = {}
        for evaluator in chosen:
            if isinstance(evaluator, StageScorer):
                scores.update(evaluator.score_stage(job))
            else:
                scores.update(evaluator.score(job.predictions(), job.references))
        results[stage.name] = {
            name: round(value, 4) if math.isfinite(value) else value for name, value in scores.items()
        }
        log.info("stage evaluated", stage=stage.name, examples=len(pairs), **results[stage.name])
    return results
