"""Where the local benchmark files are, and reading them into lm-eval datasets.

Files are found under one data folder laid out like the project's shared data
(``arc/``, ``mmlu/dev/``, ``gsm8k/``...). The folder is, in order:

1. ``$FSLM_DATA_DIR`` when set (``fslm eval --data-dir`` sets it); nothing else is tried;
2. ``../shared/data`` from the current directory;
3. ``../shared/data`` next to the fslm checkout this plugin is installed from;
4. the sample rows shipped inside this package (``fixtures/``): a few rows of
   every file, so every task runs after a plain ``pip install``; their scores
   mean nothing, and a warning says so.

Paths are resolved when a task's data is loaded (:func:`load_local_files`, named
by every task YAML), never against the current directory as lm-eval would.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from fslm_core.errors import InputError

DATA_DIR_ENV = "FSLM_DATA_DIR"
SHARED_DATA = Path("..") / "shared" / "data"
FIXTURES_DIR = Path(__file__).parent / "fixtures"

log = logging.getLogger(__name__)


class BenchmarkDataError(InputError):
    """A benchmark's data file or folder is missing or unreadable."""


def data_dir_candidates() -> list[Path]:
    """Folders searched for the data, first match wins."""
    configured = os.environ.get(DATA_DIR_ENV, "").strip()
    if configured:
        return [Path(configured).expanduser().resolve()]
    checkout = Path(__file__).resolve().parents[3]  # plugins/<dist>/<package>/data.py -> checkout root
    candidates = [(Path.cwd() / SHARED_DATA).resolve(), (checkout / SHARED_DATA).resolve(), FIXTURES_DIR.resolve()]
    return list(dict.fromkeys(candidates))


def data_dir() -> Path:
    """The data folder in use (the first candidate if none exists, so errors name it)."""
    candidates = data_dir_candidates()
    return next((folder for folder in candidates if folder.is_dir()), candidates[0])


def resolve_data_path(relative: str | Path, task: str, override: str | os.PathLike | None = None) -> Path:
    """Absolute path of a task's data file or folder; raises naming the path when it is missing."""
    if override is not None or Path(relative).is_absolute():
        path = Path(override if override is not None else relative).expanduser().resolve()
        where = "given data file"
    else:
        folder = data_dir()
        path = folder / relative
        where = f"data file (data folder: ${DATA_DIR_ENV}, else ../shared/data, else the packaged sample rows)"
        if folder == FIXTURES_DIR.resolve() and not os.environ.get(DATA_DIR_ENV, "").strip():
            _warn_sample_rows(task)
    if not path.exists():
        if override is not None:  # the user named this file: the advice is to check it, not to name one
            raise BenchmarkDataError(f"benchmark {task!r}: {where} not found: {path}; check the path given for it")
        raise BenchmarkDataError(
            f"benchmark {task!r}: {where} not found: {path}. Set {DATA_DIR_ENV} to the folder of the data files "
            f"(`fslm eval` also takes --data-dir DIR, or --data-file {task}=PATH for this file alone)"
        )
    if override is not None:
        check_fields(path, FIXTURES_DIR / relative, task)
    return path


def first_row_fields(path: Path) -> set[str] | None:
    """The fields of a data file's first row (JSON Lines, a JSON list or object, CSV); None if it has none."""
    try:
        if path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:
                return set(next(csv.reader(handle), []))
        with path.open(encoding="utf-8") as handle:
            if path.suffix == ".jsonl":
                line = next((line for line in handle if line.strip()), None)
                row = json.loads(line) if line else None
            else:
                data = json.load(handle)
                row = data[0] if isinstance(data, list) and data else data
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, StopIteration):
        return None
    return set(row) if isinstance(row, dict) else None


def check_fields(path: Path, sample: Path, task: str) -> None:
    """A given data file must have the fields of the task's own file: checked on its first row, before lm-eval
    and ``datasets`` read (and cache) anything."""
    if path.is_dir() or not sample.is_file():
        return
    expected = first_row_fields(sample)
    found = first_row_fields(path)
    if expected is None:
        return
    if found is None:
        raise BenchmarkDataError(f"benchmark {task!r}: {path} holds no rows this task can read (as {sample.suffix})")
    missing = sorted(expected - found)
    if missing:
        raise BenchmarkDataError(
            f"benchmark {task!r}: the rows of {path} lack the field(s) {', '.join(missing)} "
            f"(they have: {', '.join(sorted(found)) or 'none'})"
        )


_warned_sample_rows: set[str] = set()


def _warn_sample_rows(task: str) -> None:
    if task not in _warned_sample_rows:
        _warned_sample_rows.add(task)
        log.warning(
            "%s: no data folder found, so it scores the few sample rows shipped with fslm-plugin-benchmarks; "
            "their scores mean nothing. Set %s to a folder of the full files (same layout) for real scores",
            task,
            DATA_DIR_ENV,
        )


def read_json(path: Path, task: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BenchmarkDataError(f"benchmark {task!r}: cannot read {path}: {error}") from None


def read_mmlu_rows(path: Path, task: str) -> list[dict]:
    """MMLU rows from one ``<subject>_dev.csv``/``<subject>_test.csv`` file or a folder of them.

    The subject, which the prompt names, comes from the file name.
    """
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise BenchmarkDataError(f"benchmark {task!r}: no .csv files in {path}")
    rows = []
    for file in files:
        subject = file.stem
        for suffix in ("_dev", "_test", "_val"):
            subject = subject.removesuffix(suffix)
        try:
            with file.open(encoding="utf-8", newline="") as handle:
                for record in csv.DictReader(handle):
                    rows.append(
                        {
                            "question": record["question"],
                            "subject": subject,
                            "choices": [record[f"choice{i}"] for i in range(4)],
                            "answer": int(record["answer"]),
                        }
                    )
        except (OSError, KeyError, ValueError) as error:
            raise BenchmarkDataError(
                f"benchmark {task!r}: {file} is not an MMLU csv (header question,choice0..choice3,answer): {error}"
            ) from None
    return rows


def _ordered_targets(targets: dict[str, int]) -> dict[str, list]:
    """TruthfulQA's {answer: 0/1} as choices and labels, true answers first (their order kept)."""
    ordered = sorted(targets.items(), key=lambda item: -int(item[1]))
    return {"choices": [answer for answer, _ in ordered], "labels": [int(label) for _, label in ordered]}


def read_jsonl(paths: dict[str, Path], task: str):
    from datasets import load_dataset

    return load_dataset("json", data_files={split: str(path) for split, path in paths.items()})


def read_mmlu_csv(paths: dict[str, Path], task: str):
    from datasets import Dataset, DatasetDict

    return DatasetDict({split: Dataset.from_list(read_mmlu_rows(path, task)) for split, path in paths.items()})


def read_truthfulqa_json(paths: dict[str, Path], task: str):
    """TruthfulQA's mc_task.json (a JSON list) with each item's targets as choices and labels."""
    from datasets import Dataset, DatasetDict

    splits = {}
    for split, path in paths.items():
        rows = [
            {
                "question": item["question"],
                "mc1_targets": _ordered_targets(item["mc1_targets"]),
                "mc2_targets": _ordered_targets(item["mc2_targets"]),
            }
            for item in read_json(path, task)
        ]
        splits[split] = Dataset.from_list(rows)
    return DatasetDict(splits)


READERS: dict[str, Callable] = {"jsonl": read_jsonl, "mmlu_csv": read_mmlu_csv, "truthfulqa_json": read_truthfulqa_json}


def load_local_files(fslm_task: str, fslm_files: dict[str, str], fslm_reader: str = "jsonl", **_metadata):
    """A task's local files as an lm-eval dataset: the ``custom_dataset`` of every task YAML.

    ``fslm_files`` maps split names to paths relative to the data folder (or
    absolute). lm-eval also passes the task's metadata and the model arguments
    as keywords; they are not needed here.
    """
    if fslm_reader not in READERS:
        raise BenchmarkDataError(f"benchmark {fslm_task!r}: unknown reader {fslm_reader!r}; one of {sorted(READERS)}")
    paths = {split: resolve_data_path(path, fslm_task) for split, path in fslm_files.items()}
    return READERS[fslm_reader](paths, fslm_task)
