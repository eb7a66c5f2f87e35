"""Moved to :mod:`fslm_core.api.evaluators` ; kept so old imports work."""

from .api.evaluators import BUILTIN_EVALUATORS, Evaluator, ExactMatch, StageJob, StageScorer, TokenF1, normalise

__all__ = ["BUILTIN_EVALUATORS", "Evaluator", "ExactMatch", "StageJob", "StageScorer", "TokenF1", "normalise"]
