"""fslm's offline benchmark adapters: tinyBenchmarks task formats over local files.

Registers one lm-eval task per benchmark through fslm's ``register_benchmarks``
hook (``local_arc_easy``, ``local_mmlu``, ``local_gsm8k``...; all tagged
``local_tinybenchmarks``). ``fslm eval --tasks local_arc_easy`` runs one; see
docs/evaluation.md. Each task is an lm-eval task YAML in ``lm_eval_tasks/``,
which lm-eval's own command line also reads (``--include_path "$(fslm tasks-dir)"``).
Data comes from ``$FSLM_DATA_DIR`` or ``../shared/data``, else from the few
sample rows of each file shipped in ``fixtures/`` (see
:mod:`fslm_plugin_benchmarks.data`).
"""

from __future__ import annotations

from fslm_core import hookimpl
from fslm_core.api import Benchmark

from .data import DATA_DIR_ENV, FIXTURES_DIR, BenchmarkDataError, data_dir
from .tasks import LOCAL_TASKS, TAG, TASKS_DIR, LocalTask, local_task

__all__ = [
    "DATA_DIR_ENV",
    "FIXTURES_DIR",
    "LOCAL_TASKS",
    "TAG",
    "TASKS_DIR",
    "BenchmarkDataError",
    "LocalTask",
    "data_dir",
    "local_task",
    "register_benchmarks",
]


@hookimpl
def register_benchmarks(register):
    for task in LOCAL_TASKS:
        register(
            Benchmark(
                name=task.name,
                build_config=task.build_config,
                description=task.description,
                output_type=task.output_type,
                tags=task.tags,
                yaml_file=task.yaml_file,
            )
        )
