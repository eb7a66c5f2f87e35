"""What plugin authors subclass, return or decorate: the extension points of fslm.

Nothing here imports torch or loads a model, so a plugin can be imported (and
its registrations listed) cheaply.
"""

from .backends import Generation, ModelBackend, ModelSpec, TokenizedBackend
from .benchmarks import Benchmark
from .decompositions import Decomposition, StageRecipe, TeacherNotes
from .evaluators import Evaluator, ExactMatch, StageJob, StageScorer, TokenF1, normalise
from .exporters import Exporter, ExportResult
from .formats import Constraint, JsonFormat, KeyValueFormat, ListFormat, MessageFormat
from .hookspecs import hookimpl, hookspec
from .routers import ParallelRouter, Router, RuleRouter
from .stacks import NamedStack
from .tools import Tool, ToolResult

__all__ = [
    "Benchmark",
    "Constraint",
    "Decomposition",
    "Evaluator",
    "ExactMatch",
    "ExportResult",
    "Exporter",
    "Generation",
    "JsonFormat",
    "KeyValueFormat",
    "ListFormat",
    "MessageFormat",
    "ModelBackend",
    "NamedStack",
    "ModelSpec",
    "ParallelRouter",
    "Router",
    "RuleRouter",
    "StageJob",
    "StageRecipe",
    "TeacherNotes",
    "StageScorer",
    "TokenF1",
    "TokenizedBackend",
    "Tool",
    "ToolResult",
    "hookimpl",
    "hookspec",
    "normalise",
]
