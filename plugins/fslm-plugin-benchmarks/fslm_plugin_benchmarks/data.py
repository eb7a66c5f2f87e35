"""Where the local benchmark files are, and reading the ones lm-eval's loaders cannot.

Files are found under one data folder laid out like the project's shared data
(``arc/``, ``mmlu/dev/``, ``gsm8k/``...). The folder is, in order:

1. ``$FSLM_DATA_DIR`` when set (``fslm eval --data-dir`` sets it);
2. ``../shared/data`` from the current directory;
3. ``../shared/data`` next to the fslm checkout this plugin is installed from.

Every path handed to lm-eval is absolute and made when a task is used, because
lm-eval resolves relative ``data_files`` against the current directory.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from fslm_core.errors import InputError

DATA_DIR_ENV = "FSLM_DATA_DIR"
SHARED_DATA = Path("..") / "shared" / "data"
FIXTURES_DIR = Path(__file__).parent / "fixtures"


class BenchmarkDataError(InputError):
    """A benchmark's data file or folder is missing or unreadable."""


def data_dir_candidates() -> list[Path]:
    """Folders searched for the data, first match wins."""
    configured = os.environ.get(DATA_DIR_ENV, "").strip()
    if configured:
        return [Path(configured).expanduser().resolve()]
    checkout = Path(__file__).resolve().parents[3]  # plugins/<dist>/<package>/data.py -> checkout root
    candidates = [(Path.cwd() / SHARED_DATA).resolve(), (checkout / SHARED_DATA).resolve()]
    return list(dict.fromkeys(candidates))


def data_dir() -> Path:
    """The data folder in use (the first candidate if none exists, so errors name it)."""
    candidates = data_dir_candidates()
    return next((folder for folder in candidates if folder.is_dir()), candidates[0])


def resolve_data_path(relative: str | Path, task: str, override: str | os.PathLike | None = None) -> Path:
    """Absolute path of a task's data file or folder; raises naming the path when it is missing."""
    if override is not None:
        path = Path(override).expanduser().resolve()
        where = "given data file"
    else:
        path = data_dir() / relative
        where = f"default data file (under ${DATA_DIR_ENV} or ../shared/data)"
    if not path.exists():
        raise BenchmarkDataError(
            f"benchmark {task!r}: {where} not found: {path}. "
            f"Set {DATA_DIR_ENV} to the data folder or pass `fslm eval --data-file {task}=PATH`"
        )
    return path


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
