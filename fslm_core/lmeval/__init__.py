"""lm-evaluation-harness with fslm: a stack as an lm-eval model, the plugins' benchmark tasks, ``fslm eval``.

:class:`FslmLM` (:mod:`.model`) is the ``fslm`` model of lm-eval;
:mod:`.tasks` adds the plugins' benchmark tasks to lm-eval's task manager;
:mod:`.evaluate` is ``fslm eval`` and :mod:`.report` its table (the trace page of
``fslm eval --report`` is :mod:`fslm_core.trace_report`'s);
``python -m fslm_core.lmeval`` (:mod:`.lm_eval_cli`) is lm-eval's own command line with both;
:mod:`.quiet` keeps lm-eval's output to what these commands show.
"""

from .eval_runs import (
    TRACE_REPORT_FILE,
    EvalSettings,
    evaluate_command,
    parse_data_files,
    run_task,
    split_tasks,
    write_eval_trace_report,
)
from .lm_eval_cli import main, prepare_lm_eval, requested_tasks
from .model import FINAL_PROMPT_MODES, FslmLM
from .model_args import DEFAULT_BATCH_SIZE, parse_batch_size
from .quiet import no_context_bars, quiet_git_probe
from .table import RunResult, comparison_table, metric_rows, render_table
from .tasks import DATA_DIR_ENV, BenchmarkTaskManager, LocalTaskManager, local_task_names, task_folders, task_manager

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_BATCH_SIZE",
    "TRACE_REPORT_FILE",
    "FINAL_PROMPT_MODES",
    "BenchmarkTaskManager",
    "EvalSettings",
    "FslmLM",
    "LocalTaskManager",
    "RunResult",
    "comparison_table",
    "evaluate_command",
    "local_task_names",
    "main",
    "metric_rows",
    "no_context_bars",
    "parse_batch_size",
    "parse_data_files",
    "prepare_lm_eval",
    "quiet_git_probe",
    "render_table",
    "requested_tasks",
    "run_task",
    "split_tasks",
    "task_folders",
    "task_manager",
    "write_eval_trace_report",
]
