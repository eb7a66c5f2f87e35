"""``fslm eval``: evaluate a stack (and, with ``--baseline``, its final model alone) task by task.

Prints one side-by-side table and writes results and traces as JSON (and,
asked to, the traces as an HTML page, :mod:`fslm_core.trace_report`). From
Python, pass ``task_manager=task_manager()`` to ``lm_eval.simple_evaluate``
to use the benchmark tasks with any lm-eval model.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..declarations import Stack
from ..errors import InputError
from ..files import atomic_write_text, safe_file_name
from ..logs import get_logger
from ..runtime.costs import render_costs, stage_costs
from ..runtime.stack_choice import single_model_stack
from ..trace_report import documents_to_entries, write_trace_report
from .model import FslmLM
from .table import RunResult, comparison_table, render_table
from .tasks import DATA_DIR_ENV, BenchmarkTaskManager, task_manager

log = get_logger(__name__)

TRACE_REPORT_FILE = "report.html"


@dataclass
class EvalSettings:
    """What ``fslm eval`` hands to lm-eval, besides the model."""

    tasks: list[str]
    limit: float | None = None
    num_fewshot: int | None = None
    batch_size: str = "16"
    max_batch_size: int | None = None
    device: str | None = None
    gen_kwargs: str | None = None
    log_samples: bool = False
    bootstrap_iters: int = 100_000
    seed: int = 0
    final_prompt: str = "stage"
    dtype: str | None = None
    """``auto``, ``float32`` or ``bfloat16`` for the stack and the baseline; None keeps the stack's own."""
    data_files: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[int]] | None = None
    """Task -> the document ids to score (lm-eval's ``samples``; exclusive with ``limit``)."""


def split_tasks(tasks: str | Sequence[str]) -> list[str]:
    items = [tasks] if isinstance(tasks, str) else list(tasks)
    names = [name.strip() for item in items for name in item.split(",") if name.strip()]
    if not names:
        raise InputError("--tasks: no task given; name one or more tasks, comma-separated (see `fslm plugins`)")
    return list(dict.fromkeys(names))


def parse_data_files(items: Sequence[str]) -> dict[str, str]:
    """``TASK=PATH`` items as a mapping."""
    files = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise InputError(f"--data-file: expected TASK=PATH, got {item!r}")
        files[name.strip()] = path.strip()
    return files


def run_task(lm: FslmLM, task: str, manager: BenchmarkTaskManager, settings: EvalSettings) -> RunResult:
    """Evaluate one LM on one task with lm-eval's ``simple_evaluate``."""
    from lm_eval import simple_evaluate

    started = time.perf_counter()
    upstream_before = lm.upstream_seconds
    results = simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=manager,
        num_fewshot=settings.num_fewshot,
        limit=settings.limit,
        samples=settings.samples,
        log_samples=settings.log_samples,
        gen_kwargs=settings.gen_kwargs,
        bootstrap_iters=settings.bootstrap_iters,
        random_seed=settings.seed,
        numpy_random_seed=settings.seed,
        torch_random_seed=settings.seed,
        fewshot_random_seed=settings.seed,
    )
    elapsed = time.perf_counter() - started
    name = evaluated_task(task, results)
    cost = {**lm.task_cost(name), "upstream_seconds": round(lm.upstream_seconds - upstream_before, 2)}
    return RunResult(results, elapsed, cost, name)


def evaluated_task(task: str, results: dict | None) -> str:
    """The name lm-eval ran ``task`` under: a task given as a YAML file runs under the name inside it."""
    names = list((results or {}).get("results") or {})
    return task if task in names or len(names) != 1 else names[0]


def _json(value: Any) -> str:
    from lm_eval.utils import handle_non_serializable

    return json.dumps(value, indent=2, ensure_ascii=False, default=handle_non_serializable)


def evaluate_command(
    stack: Stack,
    settings: EvalSettings,
    output: str | os.PathLike | None = None,
    baseline: str | None = None,
    baseline_model_path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    echo=print,
    trace_report: bool = False,
) -> dict | None:
    """``fslm eval``: evaluate ``stack`` (and ``baseline`` alone) task by task; print and write the comparison.

    With ``trace_report``, the stack's traces of every task also go into
    ``<output>/report.html`` (:data:`TRACE_REPORT_FILE`), a page to read them in a browser.
    Returns the report written to ``results.json`` (None on processes other than the first).
    """
    if trace_report and output is None:
        raise InputError(f"--report: give --output FOLDER to write {TRACE_REPORT_FILE} into")
    if data_dir is None:
        return _evaluate(stack, settings, output, baseline, baseline_model_path, echo, trace_report)
    folder = Path(data_dir).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"--data-dir: folder not found: {folder}")
    with _environment(DATA_DIR_ENV, str(folder)):
        return _evaluate(stack, settings, output, baseline, baseline_model_path, echo, trace_report)


@contextmanager
def _environment(name: str, value: str):
    """Set an environment variable for the block (the benchmark plugins read the data folder from it), then
    restore it, so a Python caller's later evaluations are not pointed at this one's data."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _evaluate(stack, settings, output, baseline, baseline_model_path, echo, trace_report) -> dict | None:
    manager = task_manager(settings.tasks, data_files=settings.data_files)
    manager.check_tasks(settings.tasks)
    for name in settings.tasks:
        # Build local configs now: a missing data file fails before any model loads.
        for benchmark in sorted(manager.benchmark_tags.get(name, [])) or ([name] if name in manager.benchmarks else []):
            manager.benchmark_config(benchmark)
        if not manager.is_local(name):
            _check_reachable(manager, name)
    model_options = dict(
        batch_size=settings.batch_size,
        max_batch_size=settings.max_batch_size,
        device=settings.device,
        final_prompt=settings.final_prompt,
        seed=settings.seed,
        dtype=settings.dtype or stack.dtype,  # the baseline computes as the stack does, for a fair comparison
    )
    stack_lm = FslmLM(stack=stack, **model_options)
    baseline_lm = None
    if baseline:
        if baseline_model_path is None and baseline == stack.final_stage.model:
            baseline_model_path = stack.final_stage.model_path
        baseline_lm = FslmLM(stack=single_model_stack(baseline, baseline_model_path), **model_options)

    runs: dict[str, dict[str, RunResult]] = {}
    traces: dict[str, list[dict]] = {}
    models = {"stack": stack_lm, "baseline": baseline_lm} if baseline_lm is not None else {"stack": stack_lm}
    for task in settings.tasks:
        runs[task] = {}
        for label, lm in models.items():
            run = run_task(lm, task, manager, settings)
            # lm-eval shards documents across processes: count every process's documents.
            documents = _gathered_traces(lm, run.task_name or task)
            run.cost.update(lm.task_cost(run.task_name or task, documents))
            runs[task][label] = run
            if label == "stack":
                traces[task] = documents
    if stack_lm.rank != 0:
        return None

    rows = comparison_table(runs, with_baseline=baseline_lm is not None)
    report = {
        "stack": {"name": stack.name, "yaml": stack.to_yaml()},
        "baseline": baseline,
        "settings": {k: v for k, v in vars(settings).items()},
        "table": rows,
        "tasks": {
            task: {
                model: {"wall_time_s": run.wall_time_s, "cost": run.cost, "results": _without_samples(run.results)}
                for model, run in by_model.items()
            }
            for task, by_model in runs.items()
        },
    }
    echo(f"stack: {stack.name}" + (f"   baseline: {baseline} alone" if baseline else ""))
    echo(render_table(rows, with_baseline=baseline_lm is not None))
    stack_traces = [entry.trace for task, docs in traces.items() for entry in documents_to_entries(task, docs)]
    if stack_traces:
        echo(render_costs(stage_costs(stack, stack_traces)))
    if output is not None:
        folder = Path(output).expanduser().resolve()
        atomic_write_text(folder / "results.json", _json(report))
        for task, documents in traces.items():
            stack_lm.write_traces(folder, runs[task]["stack"].task_name or task, documents)
        if trace_report:
            echo(f"trace report: {write_eval_trace_report(folder / TRACE_REPORT_FILE, stack, traces)}")
        if settings.log_samples:
            for by_model in runs.values():
                for model, run in by_model.items():
                    for name, samples in ((run.results or {}).get("samples") or {}).items():
                        atomic_write_text(folder / f"samples_{safe_file_name(name)}_{model}.json", _json(samples))
        echo(f"results and traces written to {folder}")
    return report


def write_eval_trace_report(path: Path, stack: Stack, traces: dict[str, list[dict]]) -> Path:
    """The trace report of an evaluation: every task's document traces, then the stack's cost per stage."""
    entries = [entry for task, documents in traces.items() for entry in documents_to_entries(task, documents)]
    costs = stage_costs(stack, [entry.trace for entry in entries])
    title = f"fslm eval of {stack.name}: {', '.join(traces)}"
    return write_trace_report(path, entries, costs, title)


def _check_reachable(manager: BenchmarkTaskManager, name: str) -> None:
    """Load an lm-eval task once, turning an unreachable Hub into one line that points at the local tasks."""
    try:
        manager.load([name])
    except ConnectionError as error:
        raise InputError(
            f"--tasks: {name!r} needs its dataset from the Hugging Face Hub, which cannot be reached ({error}); "
            f"offline, use the local tasks: {', '.join(sorted(manager.benchmarks))}"
        ) from None


def _gathered_traces(lm: FslmLM, task: str) -> list[dict]:
    """A task's document traces from every process (lm-eval shards documents across them)."""
    parts = lm.gather_object(lm.document_traces(task), dst=0)
    if parts is None:
        return []
    return sorted((doc for part in parts for doc in part), key=lambda doc: doc["doc_id"])


def _without_samples(results: dict | None) -> dict | None:
    if results is None:
        return None
    return {key: value for key, value in results.items() if key != "samples"}
