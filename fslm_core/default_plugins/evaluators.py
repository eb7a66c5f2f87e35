"""Built-in evaluators: scores of a stage's texts (``exact-match``, ``token-f1``) and of its model (``target-loss``)."""

from __future__ import annotations

from ..api.evaluators import BUILTIN_EVALUATORS, StageJob, StageScorer
from ..api.hookspecs import hookimpl
from ..runtime.scoring import encode_example, mean_target_loss, require_tokenized_backend


class TargetLoss(StageScorer):
    """Mean loss per target token of the stage's model on its targets, with and without its adapter."""

    name = "target-loss"
    description = "Mean per-token loss of each stage's target given its input (lower is better); needs the model."

    def score_stage(self, job: StageJob) -> dict[str, float]:
        backend = require_tokenized_backend(job.backend, job.stage.name)
        encoded = [encode_example(backend, p, t, job.max_length) for p, t in zip(job.prompts, job.references)]
        scores = {"target_loss": mean_target_loss(backend, job.adapter_name, encoded, job.batch_size)}
        if job.adapter_name is not None:
            scores["base_target_loss"] = mean_target_loss(backend, None, encoded, job.batch_size)
        return scores


@hookimpl(tryfirst=True)
def register_evaluators(register):
    for evaluator in (*BUILTIN_EVALUATORS, TargetLoss()):
        register(evaluator)
