"""Moved to :mod:`fslm_core.harness.model` (exported by :mod:`fslm_core.harness`); kept for old imports.

lm-eval finds the ``fslm`` model here through the ``lm_eval.models`` entry point.
"""

from .harness.model import DEFAULT_BATCH_SIZE, FINAL_PROMPT_MODES, FslmLM, parse_batch_size
from .plugins import single_model_stack

__all__ = ["DEFAULT_BATCH_SIZE", "FINAL_PROMPT_MODES", "FslmLM", "parse_batch_size", "single_model_stack"]
