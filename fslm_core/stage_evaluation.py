"""Moved to :mod:`fslm_core.training.stage_evaluation` (exported by :mod:`fslm_core.training`); kept for old imports."""

from .training.stage_evaluation import StageEvalJob, evaluate_stages

__all__ = ["StageEvalJob", "evaluate_stages"]
