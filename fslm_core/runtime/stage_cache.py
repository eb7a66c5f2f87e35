"""What stages wrote, kept on disk: a rerun of the same stage on the same input reads it instead of generating.

Content-addressed: the key is a SHA-256 over everything that decides a greedy
stage's output: the base model (backend, id, dtype, quantisation, where its
weights are and the size and modification time of each weights file), the
adapter (a hash of its weights and config), the prompt exactly as the model
reads it (instruction, template, the user's prompt and the earlier messages,
laid out by the backend) and the generation settings. A changed adapter,
prompt or setting gives another key, so a stale answer is never returned.

Only greedy stages are cached: a sampled output depends on the random state of
the whole batch. The store is one SQLite file in WAL mode (readers never wait
for the writer; a second writer waits its turn), under ``$FSLM_CACHE_DIR``.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import threading
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from ..api.backends import Generation, ModelSpec
from ..declarations import GenerationSettings
from ..files import cache_dir

CACHE_FILE = "stages.sqlite"
KEY_VERSION = 1
BUSY_TIMEOUT_SECONDS = 60
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def default_cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def _file_stamps(folder: Path, names: tuple[str, ...] | None = None) -> list:
    files = [folder / name for name in names] if names else sorted(folder.iterdir())
    return [
        [path.name, path.stat().st_size, path.stat().st_mtime_ns]
        for path in files
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES
    ]


def model_identity(spec: ModelSpec) -> dict:
    """What identifies a loaded base model's weights, cheaply (file sizes and times, not contents)."""
    identity = {
        "id": spec.id,
        "backend": spec.backend,
        "source": spec.source,
        "gguf_file": spec.gguf_file,
        "dtype": spec.dtype,
        "quantize": spec.quantize,
    }
    if spec.source and Path(spec.source).is_dir():
        identity["weights"] = _file_stamps(Path(spec.source), (spec.gguf_file,) if spec.gguf_file else None)
    return identity


@lru_cache(maxsize=256)
def _adapter_digest(folder: str, stamps: tuple) -> str:
    digest = hashlib.sha256()
    for name in sorted(path.name for path in Path(folder).iterdir() if path.is_file()):
        digest.update(name.encode())
        digest.update((Path(folder) / name).read_bytes())
    return digest.hexdigest()


def adapter_identity(adapter: Path | None) -> str | None:
    """A hash of the adapter folder's files (memoised while their sizes and times stay the same)."""
    if adapter is None:
        return None
    folder = Path(adapter).resolve()
    stamps = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file())
    return _adapter_digest(str(folder), stamps)


def stage_key(
    model: dict, adapter: str | None, prompt: str, settings: GenerationSettings, constraint: str | None = None
) -> str:
    content = {
        "version": KEY_VERSION,
        "model": model,
        "adapter": adapter,
        "prompt": prompt,
        "generation": settings.model_dump(mode="json"),
    }
    if constraint is not None:  # free-text stages keep the keys they had before formats were enforced
        content["constraint"] = constraint
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def score_key(model: dict, adapter: str | None, context: str, continuation: str, options: dict) -> str:
    """Key of a continuation's log-probability under a stage's model and adapter (lm-eval's ``loglikelihood``)."""
    content = {
        "version": KEY_VERSION,
        "kind": "loglikelihood",
        "model": model,
        "adapter": adapter,
        "context": context,
        "continuation": continuation,
        "options": options,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def _switch_to_wal(connection: sqlite3.Connection) -> None:
    """Put the file in WAL mode, waiting out other connections doing the same.

    On a new file, connections opened at once race to switch its journal mode,
    and SQLite refuses the loser with "database is locked" at once, without
    waiting out its busy timeout (seen with four threads on a fresh file).
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.001, 0.02))


class StageCache:
    """Stage outputs (and final-stage scores) by key in one SQLite file; safe to share between threads and processes."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS)
            _switch_to_wal(connection)
            connection.execute(
                "CREATE TABLE IF NOT EXISTS outputs (key TEXT PRIMARY KEY, generation TEXT NOT NULL, created REAL)"
            )
            connection.execute(
                "CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score TEXT NOT NULL, created REAL)"
            )
            connection.commit()
            self._local.connection = connection
        return connection

    def get_many(self, keys: list[str]) -> dict[str, Generation]:
        found: dict[str, Generation] = {}
        connection = self._connection()
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite's limit on bound parameters
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in connection.execute(f"SELECT key, generation FROM outputs WHERE key IN ({marks})", chunk):
                found[key] = Generation(**json.loads(value))
        return found

    def put_many(self, items: dict[str, Generation]) -> None:
        if not items:
            return
        connection = self._connection()
        now = time.time()
        with connection:  # one transaction
            connection.executemany(
                "INSERT OR REPLACE INTO outputs (key, generation, created) VALUES (?, ?, ?)",
                [(key, json.dumps(asdict(generation)), now) for key, generation in items.items()],
            )

    def get_scores(self, keys: list[str]) -> dict[str, tuple[float, bool]]:
        """Cached (log-probability, is greedy) of continuations, by :func:`score_key`."""
        found: dict[str, tuple[float, bool]] = {}
        connection = self._connection()
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in connection.execute(f"SELECT key, score FROM scores WHERE key IN ({marks})", chunk):
                logprob, greedy = json.loads(value)
                found[key] = (float(logprob), bool(greedy))
        return found

    def put_scores(self, items: dict[str, tuple[float, bool]]) -> None:
        if not items:
            return
        connection = self._connection()
        now = time.time()
        with connection:
            connection.executemany(
                "INSERT OR REPLACE INTO scores (key, score, created) VALUES (?, ?, ?)",
                [(key, json.dumps([float(score[0]), bool(score[1])]), now) for key, score in items.items()],
            )

    def info(self) -> dict:
        if not self.path.is_file():
            return {"path": str(self.path), "entries": 0, "bytes": 0}
        connection = self._connection()
        (outputs,) = connection.execute("SELECT COUNT(*) FROM outputs").fetchone()
        (scores,) = connection.execute("SELECT COUNT(*) FROM scores").fetchone()
        entries = outputs + scores
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {"path": str(self.path), "entries": entries, "bytes": size}

    def clear(self) -> int:
        """Remove every entry; return the bytes the file held."""
        freed = self.info()["bytes"]
        if self.path.is_file():
            connection = self._connection()
            with connection:
                connection.execute("DELETE FROM outputs")
                connection.execute("DELETE FROM scores")
            connection.execute("VACUUM")
        return freed

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
