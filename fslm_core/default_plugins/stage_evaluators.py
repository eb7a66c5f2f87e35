"""Built-in evaluators that score a stage's model directly (``target-loss``)."""

from ..hookspecs import hookimpl
from ..stage_evaluation import BUILTIN_STAGE_EVALUATORS


@hookimpl
def register_evaluators(register):
    for evaluator in BUILTIN_STAGE_EVALUATORS:
        register(evaluator)
