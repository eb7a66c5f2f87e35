"""Running lm-evaluation-harness with fslm: plugins' benchmark tasks, ``fslm eval``, ``python -m fslm_core.harness``.

lm-eval 0.4.13 discovers neither models nor tasks through entry points, so:

* :class:`BenchmarkTaskManager` is lm-eval's ``TaskManager`` that also knows
  the tasks plugins register through the ``register_benchmarks`` hook (and
  their tags); each task's config is built only when the task is used, so a
  missing data file only matters for the tasks that need it.
* :func:`evaluate_command` is ``fslm eval``: evaluate a stack (and, with
  ``--baseline``, its final model alone) task by task, print one side-by-side
  table and write results and traces as JSON.
* ``python -m fslm_core.harness ARGS`` is lm-eval's own command line with the
  ``fslm`` model and the benchmark tasks available, e.g.
  ``python -m fslm_core.harness --model fslm --model_args stack=my-stack --tasks local_arc_easy``.

From Python, pass ``task_manager=task_manager()`` to ``lm_eval.simple_evaluate``
to use the benchmark tasks with any lm-eval model.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_eval.tasks import TaskManager
from lm_eval.tasks._index import Entry, Kind

from .declarations import Stack
from .errors import FslmError, InputError, UnknownNameError
from .files import atomic_write_text, safe_file_name
from .logs import configure_logging, get_logger
from .plugins import Registry, get_registry

DATA_DIR_ENV = "FSLM_DATA_DIR"  # read by the benchmark plugins to find their data folder

log = get_logger(__name__)


class BenchmarkTaskManager(TaskManager):
    """lm-eval's task manager plus the benchmark tasks fslm plugins register.

    :param data_files: task name -> data file replacing the one the benchmark scores by default.
    :param include_defaults: also index lm-eval's own tasks (about 13 s: thousands of YAML files).
    """

    def __init__(
        self,
        *args: Any,
        data_files: dict[str, str | os.PathLike] | None = None,
        registry: Registry | None = None,
        include_defaults: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, include_defaults=include_defaults, **kwargs)
        registry = registry or get_registry()
        self.benchmarks = {name: registry.benchmark(name) for name in registry.names("benchmarks")}
        self.benchmark_tags: dict[str, list[str]] = defaultdict(list)
        for name, benchmark in self.benchmarks.items():
            for tag in benchmark.tags:
                self.benchmark_tags[tag].append(name)
        self.data_files = {name: Path(path) for name, path in (data_files or {}).items()}
        for name in self.data_files:
            if name not in self.benchmarks:
                raise UnknownNameError("benchmark task", name, self.benchmarks, field="--data-file")
        # Index entries make the names visible to lm-eval's matching and listing;
        # their configs are built in _load_spec, when a task is asked for.
        for name, benchmark in self.benchmarks.items():
            self._index[name] = Entry(name=name, kind=Kind.TASK, yaml_path=None, tags=set(benchmark.tags))
        for tag, names in self.benchmark_tags.items():
            self._index.setdefault(tag, Entry(name=tag, kind=Kind.TAG, yaml_path=None, tags=set(names)))
        self._all_tasks = sorted(self._index)
        self._all_subtasks = sorted({*self._all_subtasks, *self.benchmarks})
        self._all_tags = sorted({*self._all_tags, *self.benchmark_tags})

    def benchmark_config(self, name: str) -> dict[str, Any]:
        """The lm-eval config of a benchmark task, with its data file override if any."""
        build = self.benchmarks[name].build_config
        if name in self.data_files:
            if "data_path" not in inspect.signature(build).parameters:
                raise InputError(f"--data-file: benchmark {name!r} does not take a data file")
            return build(data_path=self.data_files[name])
        return build()

    def _load_spec(self, spec):
        if isinstance(spec, str) and spec in self.benchmarks:
            return super()._load_spec(self.benchmark_config(spec))
        if isinstance(spec, str) and spec in self.benchmark_tags:
            return [
                super(BenchmarkTaskManager, self)._load_spec(self.benchmark_config(name))
                for name in sorted(self.benchmark_tags[spec])
            ]
        return super()._load_spec(spec)

    def is_local(self, name: str) -> bool:
        return name in self.benchmarks or name in self.benchmark_tags

    def check_tasks(self, names: Sequence[str]) -> None:
        """Raise naming the first task that is neither a benchmark task, an lm-eval task nor a task YAML file."""
        for name in names:
            if self.is_local(name) or (name.endswith((".yaml", ".yml")) and Path(name).is_file()):
                continue
            if self.match_tasks([name]):
                continue
            raise UnknownNameError(
                "benchmark task",
                name,
                [*self.benchmarks, *self.benchmark_tags],
                "lm-eval's own tasks also work where their datasets can be downloaded",
                field="--tasks",
            )


def task_manager(
    task_names: Sequence[str] | None = None, data_files: dict | None = None, **kwargs: Any
) -> BenchmarkTaskManager:
    """A task manager for ``task_names``: lm-eval's own tasks are indexed only if some name is not a benchmark task."""
    registry = get_registry()
    local = set(registry.names("benchmarks"))
    for name in registry.names("benchmarks"):
        local.update(registry.benchmark(name).tags)
    include_defaults = task_names is None or any(name not in local for name in task_names)
    return BenchmarkTaskManager(data_files=data_files, registry=registry, include_defaults=include_defaults, **kwargs)


# fslm eval ------------------------------------------------------------------------------


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
    data_files: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    """One model's lm-eval results on one task, with its wall time."""

    results: dict | None
    wall_time_s: float
    cost: dict


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


def run_task(lm, task: str, manager: BenchmarkTaskManager, settings: EvalSettings) -> RunResult:
    """Evaluate one LM on one task with lm-eval's ``simple_evaluate``."""
    from lm_eval import simple_evaluate

    started = time.perf_counter()
    upstream_before = getattr(lm, "upstream_seconds", 0.0)
    results = simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=manager,
        num_fewshot=settings.num_fewshot,
        limit=settings.limit,
        log_samples=settings.log_samples,
        gen_kwargs=settings.gen_kwargs,
        bootstrap_iters=settings.bootstrap_iters,
        random_seed=settings.seed,
        numpy_random_seed=settings.seed,
        torch_random_seed=settings.seed,
        fewshot_random_seed=settings.seed,
    )
    elapsed = time.perf_counter() - started
    cost = {**lm.task_cost(task), "upstream_seconds": round(getattr(lm, "upstream_seconds", 0.0) - upstream_before, 2)}
    return RunResult(results, elapsed, cost)


def metric_rows(task_results: dict | None) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """(task, metric) -> (value, stderr) from lm-eval's results, one row per metric and filter."""
    rows = {}
    for task, values in ((task_results or {}).get("results") or {}).items():
        for key, value in values.items():
            metric, sep, filter_name = key.partition(",")
            if not sep or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = values.get(f"{metric}_stderr,{filter_name}")
            label = metric if filter_name == "none" else f"{metric} ({filter_name})"
            rows[(task, label)] = (float(value), float(stderr) if isinstance(stderr, (int, float)) else None)
    return rows


def comparison_table(runs: dict[str, dict[str, RunResult]], with_baseline: bool) -> list[dict]:
    """Rows of task, metric, stack and baseline values with their stderr and wall times."""
    table = []
    for by_model in runs.values():
        stack_rows = metric_rows(by_model["stack"].results)
        baseline_rows = metric_rows(by_model["baseline"].results) if with_baseline else {}
        for (task_name, metric), (value, stderr) in stack_rows.items():
            baseline_value, baseline_stderr = baseline_rows.get((task_name, metric), (None, None))
            table.append(
                {
                    "task": task_name,
                    "metric": metric,
                    "stack": value,
                    "stack_stderr": stderr,
                    "baseline": baseline_value,
                    "baseline_stderr": baseline_stderr,
                    "stack_time_s": round(by_model["stack"].wall_time_s, 1),
                    "baseline_time_s": round(by_model["baseline"].wall_time_s, 1) if with_baseline else None,
                    "upstream_tokens_per_document": by_model["stack"].cost["upstream_tokens_per_document"],
                }
            )
    return table


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def render_table(rows: list[dict], with_baseline: bool) -> str:
    """The comparison as aligned text columns."""
    headers = ["task", "metric", "stack", "stderr"]
    if with_baseline:
        headers += ["baseline", "stderr"]
    headers += ["stack time"] + (["baseline time"] if with_baseline else []) + ["upstream tok/doc"]
    lines = []
    for row in rows:
        cells = [row["task"], row["metric"], _number(row["stack"]), _number(row["stack_stderr"])]
        if with_baseline:
            cells += [_number(row["baseline"]), _number(row["baseline_stderr"])]
        cells.append(f"{row['stack_time_s']:.1f} s")
        if with_baseline:
            cells.append(f"{row['baseline_time_s']:.1f} s")
        cells.append(f"{row['upstream_tokens_per_document']:.1f}")
        lines.append(cells)
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *lines)]
    render = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([render(headers), render(["-" * w for w in widths]), *map(render, lines)])


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
) -> dict | None:
    """``fslm eval``: evaluate ``stack`` (and ``baseline`` alone) task by task; print and write the comparison.

    Returns the report written to ``results.json`` (None on processes other than the first).
    """
    from .evaluation import FslmLM
    from .plugins import single_model_stack

    if data_dir is not None:
        folder = Path(data_dir).expanduser().resolve()
        if not folder.is_dir():
            raise InputError(f"--data-dir: folder not found: {folder}")
        os.environ[DATA_DIR_ENV] = str(folder)
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
            documents = _gathered_traces(lm, task)
            run.cost.update(lm.task_cost(task, documents))
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
    if output is not None:
        folder = Path(output).expanduser().resolve()
        atomic_write_text(folder / "results.json", _json(report))
        for task, documents in traces.items():
            stack_lm.write_traces(folder, task, documents)
        if settings.log_samples:
            for by_model in runs.values():
                for model, run in by_model.items():
                    for name, samples in ((run.results or {}).get("samples") or {}).items():
                        atomic_write_text(folder / f"samples_{safe_file_name(name)}_{model}.json", _json(samples))
        echo(f"results and traces written to {folder}")
    return report


def _check_reachable(manager: BenchmarkTaskManager, name: str) -> None:
    """Load an lm-eval task once, turning an unreachable Hub into one line that points at the local tasks."""
    try:
        manager.load([name])
    except ConnectionError as error:
        raise InputError(
            f"--tasks: {name!r} needs its dataset from the Hugging Face Hub, which cannot be reached ({error}); "
            f"offline, use the local tasks: {', '.join(sorted(manager.benchmarks))}"
        ) from None


def _gathered_traces(lm, task: str) -> list[dict]:
    """A task's document traces from every process (lm-eval shards documents across them)."""
    parts = lm.gather_object(lm.document_traces(task), dst=0)
    if parts is None:
        return []
    return sorted((doc for part in parts for doc in part), key=lambda doc: doc["doc_id"])


def _without_samples(results: dict | None) -> dict | None:
    if results is None:
        return None
    return {key: value for key, value in results.items() if key != "samples"}


# python -m fslm_core.harness ------------------------------------------------------------


class LocalTaskManager(BenchmarkTaskManager):
    """A :class:`BenchmarkTaskManager` that skips indexing lm-eval's own tasks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("include_defaults", False)
        super().__init__(*args, **kwargs)


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

    from . import evaluation  # noqa: F401  (registers the fslm model)

    registry = get_registry()
    local = set(registry.names("benchmarks"))
    for name in registry.names("benchmarks"):
        local.update(registry.benchmark(name).tags)
    tasks = requested_tasks(argv)
    local_only = bool(tasks) and all(name in local for name in tasks)
    lm_eval.tasks.TaskManager = LocalTaskManager if local_only else BenchmarkTaskManager


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line (``lm_eval ...``) with fslm's model and benchmark tasks."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    configure_logging()
    try:
        prepare_lm_eval(sys.argv[1:])
        cli_evaluate()
    except FslmError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
