from ..api.evaluators import BUILTIN_EVALUATORS
from ..api.hookspecs import hookimpl


@hookimpl(tryfirst=True)
def register_evaluators(register):
    for evaluator in BUILTIN_EVALUATORS:
        register(evaluator)
