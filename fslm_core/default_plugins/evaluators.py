from ..evaluators import BUILTIN_EVALUATORS
from ..hookspecs import hookimpl


@hookimpl
def register_evaluators(register):
    for evaluator in BUILTIN_EVALUATORS:
        register(evaluator)
