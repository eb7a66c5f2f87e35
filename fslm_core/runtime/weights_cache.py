"""De-quantised GGUF models kept on disk, so that a model's second start takes a second, not a minute.

transformers reads a GGUF file by de-quantising every tensor and rebuilding the
tokenizer from the file's vocabulary: about 50 s for the embedded SmolLM2 on 2
cores. The first load writes the result into a cache entry (``model.safetensors``
memory-mapped on later loads, ``tokenizer.json``, the configs); later loads
read the entry instead.

An entry is keyed by what decides its contents: the GGUF file's SHA-256, the
dtype, the fslm version and transformers' major.minor version. It is written
under a temporary name and renamed into place, and it records the size and
CRC-32 of each of its files: an entry that is incomplete, truncated or changed
is removed and rebuilt, never loaded. ``FSLM_WEIGHTS_CACHE=0`` switches the
cache off; ``fslm cache info`` and ``fslm cache clear`` show and free it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..files import TMP_PREFIX, cache_dir, safe_file_name, write_folder_atomically
from ..logs import get_logger

log = get_logger(__name__)

CACHE_ENV = "FSLM_WEIGHTS_CACHE"
MODELS_SUBDIR = "models"
RECORD = "fslm_cache_entry.json"
RECORD_VERSION = 1
CHUNK = 16 << 20


def cache_enabled() -> bool:
    return os.environ.get(CACHE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def models_cache() -> Path:
    return cache_dir() / MODELS_SUBDIR


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def file_crc32(path: Path) -> int:
    """CRC-32 of a file: cheap enough to check every load (about 3 GB/s), and it catches damaged bytes."""
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


def fslm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fslm-core")
    except PackageNotFoundError:  # a source tree on sys.path, not installed
        return "source"


def entry_name(model_id: str, gguf_sha256: str, dtype: str) -> str:
    import transformers

    transformers_version = ".".join(transformers.__version__.split(".")[:2])
    return safe_file_name(
        f"{model_id}-{gguf_sha256[:16]}-{dtype}-fslm{fslm_version()}-transformers{transformers_version}"
    )


def entry_problem(entry: Path) -> str | None:
    """Why ``entry`` must not be loaded (None if it is whole)."""
    try:
        record = json.loads((entry / RECORD).read_text(encoding="utf-8"))
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{RECORD} missing or unreadable"
    if record.get("version") != RECORD_VERSION:
        return f"written by another cache layout (version {record.get('version')!r})"
    for name, expected in files.items():
        path = entry / name
        if not path.is_file():
            return f"{name} missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size} bytes, expected {expected['size']}"
        if file_crc32(path) != expected["crc32"]:
            return f"{name} changed since it was written (CRC-32 differs)"
    return None


def find_entry(model_id: str, gguf_file: Path, dtype: str) -> tuple[Path, str]:
    """The cache entry for this GGUF file and dtype, whole or not, and the file's SHA-256."""
    digest = file_sha256(gguf_file)
    return models_cache() / entry_name(model_id, digest, dtype), digest


def usable_entry(entry: Path) -> Path | None:
    """``entry`` if it can be loaded; a damaged one is removed (and logged) so it is rebuilt."""
    if not entry.is_dir():
        return None
    problem = entry_problem(entry)
    if problem is None:
        return entry
    log.warning("weights cache entry damaged; rebuilding it", entry=str(entry), problem=problem)
    shutil.rmtree(entry, ignore_errors=True)
    return None


def write_entry(entry: Path, model, tokenizer, source: Path, gguf_sha256: str) -> Path:
    """Write the loaded ``model`` and ``tokenizer`` as the cache entry ``entry`` (atomically)."""
    from safetensors.torch import save_model

    def write(folder: Path) -> None:
        folder.mkdir(parents=True)
        # save_pretrained refuses a model loaded from GGUF; the state dict itself is plain tensors.
        # save_model stores tied weights (embeddings and output head) once.
        save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        model.generation_config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        files = {
            path.name: {"size": path.stat().st_size, "crc32": file_crc32(path)}
            for path in sorted(folder.iterdir())
            if path.is_file()
        }
        record = {
            "version": RECORD_VERSION,
            "source": str(source),
            "source_sha256": gguf_sha256,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
        }
        (folder / RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")

    entry.parent.mkdir(parents=True, exist_ok=True)
    return write_folder_atomically(entry, write)


@dataclass(frozen=True)
class CacheEntry:
    name: str
    path: Path
    bytes: int
    problem: str | None


def cache_entries() -> list[CacheEntry]:
    """Every entry of the models cache, with its size and whether it is whole."""
    root = models_cache()
    if not root.is_dir():
        return []
    entries = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX)):
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        entries.append(CacheEntry(path.name, path, size, entry_problem(path)))
    return entries


def clear_cache() -> int:
    """Remove the models cache; return the bytes freed."""
    freed = sum(entry.bytes for entry in cache_entries())
    shutil.rmtree(models_cache(), ignore_errors=True)
    return freed
