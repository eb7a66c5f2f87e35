"""``python -m fslm_core.lmeval ARGS``: lm-eval's own command line with the ``fslm`` model and the benchmark tasks.

For example ``python -m fslm_core.lmeval --model fslm --model_args stack=my-stack --tasks local_arc_easy``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..errors import FslmError
from ..logs import configure_logging
from ..plugins import get_registry
from . import model  # noqa: F401  (registers the fslm model with lm-eval)
from .quiet import quiet_git_probe
from .tasks import BenchmarkTaskManager, LocalTaskManager, local_benchmarks, local_task_names


def requested_tasks(argv: Sequence[str]) -> list[str]:
    """Task names given to lm-eval's ``--tasks`` option in ``argv`` (empty if none)."""
    names: list[str] = []
    for index, argument in enumerate(argv):
        if argument in ("--tasks", "-t") and index + 1 < len(argv):
            names += argv[index + 1].split(",")
        elif argument.startswith("--tasks="):
            names += argument.split("=", 1)[1].split(",")
    return [name.strip() for name in names if name.strip()]


def prepare_lm_eval(argv: Sequence[str] = ()) -> None:
    """Make lm-eval's command line see the ``fslm`` model and the benchmark tasks (this process only).

    When every task in ``argv`` is a benchmark task, lm-eval's own task index
    (about 13 s to build) is skipped.
    """
    import lm_eval.tasks

    registry = get_registry()
    local = local_task_names(registry)
    tasks = requested_tasks(argv)
    local_only = bool(tasks) and all(name in local for name in tasks)
    # Build the local tasks' configs now: a missing data file stops the run before lm-eval loads a model.
    for name in tasks:
        for benchmark in local_benchmarks(registry, name):
            benchmark.build_config()
    lm_eval.tasks.TaskManager = LocalTaskManager if local_only else BenchmarkTaskManager


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line (``lm_eval ...``) with fslm's model and benchmark tasks."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    # lm-eval prints its own lines; fslm adds only its warnings and errors.
    configure_logging(level="WARNING")
    try:
        prepare_lm_eval(sys.argv[1:])
        with quiet_git_probe():
            cli_evaluate()
    except FslmError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
