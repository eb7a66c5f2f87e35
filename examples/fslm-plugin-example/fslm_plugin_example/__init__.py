"""An example fslm plugin: one implementation of every hook family.

fslm finds this module through the ``fslm`` entry point in ``pyproject.toml``
and calls each ``register_*`` function below once, with a ``register``
callback. Everything here runs without model weights, so the whole plugin
can be tried in seconds::

    pip install ./examples/fslm-plugin-example
    fslm plugins
    fslm run --decomposition keywords-answer --model echo "What is the capital of France?"
"""

from fslm_core import hookimpl

from .backend import ECHO_MODEL, EchoBackend
from .benchmarks import ARITHMETIC
from .decompositions import KEYWORDS_ANSWER
from .evaluators import ContainsReference
from .formats import KeywordsFormat
from .routers import SkipShortPrompts


@hookimpl
def register_backends(register):
    register(EchoBackend)


@hookimpl
def register_models(register):
    register(ECHO_MODEL)


@hookimpl
def register_formats(register):
    register(KeywordsFormat())


@hookimpl
def register_routers(register):
    register(SkipShortPrompts())


@hookimpl
def register_decompositions(register):
    register(KEYWORDS_ANSWER)


@hookimpl
def register_evaluators(register):
    register(ContainsReference())


@hookimpl
def register_benchmarks(register):
    register(ARITHMETIC)
