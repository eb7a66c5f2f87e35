"""lm-eval's task manager with the benchmark tasks fslm plugins register (``register_benchmarks``).

lm-eval 0.4.13 discovers tasks through no entry point, so
:class:`BenchmarkTaskManager` adds the plugins' tasks and tags to its index;
each task's config is built only when the task is used, so a missing data
file only matters for the tasks that need it.
"""

from __future__ import annotations

import inspect
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lm_eval.tasks import TaskManager
from lm_eval.tasks._index import Entry, Kind

from ..api.benchmarks import Benchmark, yaml_folders
from ..errors import InputError, UnknownNameError
from ..plugins import Registry, get_registry

DATA_DIR_ENV = "FSLM_DATA_DIR"  # read by the benchmark plugins to find their data folder


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


def local_benchmarks(registry: Registry, name: str) -> list[Benchmark]:
    """The benchmark called ``name``, or those tagged ``name`` (none if it is neither)."""
    benchmarks = [registry.benchmark(other) for other in registry.names("benchmarks")]
    return [benchmark for benchmark in benchmarks if name == benchmark.name or name in benchmark.tags]


def task_folders(registry: Registry | None = None) -> list[Path]:
    """Folders of the installed benchmark tasks' lm-eval YAML files: what lm-eval's ``--include_path`` takes."""
    registry = registry or get_registry()
    return yaml_folders(registry.benchmark(name) for name in registry.names("benchmarks"))


def local_task_names(registry: Registry) -> set[str]:
    """The names of the plugins' benchmark tasks and of their tags."""
    names = set(registry.names("benchmarks"))
    for name in registry.names("benchmarks"):
        names.update(registry.benchmark(name).tags)
    return names


def task_manager(
    task_names: Sequence[str] | None = None, data_files: dict | None = None, **kwargs: Any
) -> BenchmarkTaskManager:
    """A task manager for ``task_names``: lm-eval's own tasks are indexed only if some name is not a benchmark task."""
    registry = get_registry()
    local = local_task_names(registry)
    include_defaults = task_names is None or any(name not in local for name in task_names)
    return BenchmarkTaskManager(data_files=data_files, registry=registry, include_defaults=include_defaults, **kwargs)


class LocalTaskManager(BenchmarkTaskManager):
    """A :class:`BenchmarkTaskManager` that skips indexing lm-eval's own tasks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("include_defaults", False)
        super().__init__(*args, **kwargs)
