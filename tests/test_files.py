"""Durability rules for what fslm writes: whole files and folders only, and leftovers a rerun can sweep."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fslm_core.files import TMP_PREFIX, atomic_write_text, remove_temporaries, write_folder_atomically


def test_a_folder_is_replaced_whole_and_a_failed_write_leaves_the_old_one(tmp_path):
    final = tmp_path / "adapter"

    def writer(text):
        def write(folder):
            folder.mkdir()  # writers may create the folder themselves: it must not exist yet
            (folder / "weights").write_text(text)

        return write

    write_folder_atomically(final, writer("old"))
    write_folder_atomically(final, writer("new"))
    assert (final / "weights").read_text() == "new"
    assert [path.name for path in tmp_path.iterdir()] == ["adapter"]  # the old copy is gone, no leftovers

    def failing(folder):
        writer("half")(folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder_atomically(final, failing)
    assert (final / "weights").read_text() == "new"
    assert [path.name for path in tmp_path.iterdir()] == ["adapter"]


def test_two_writers_of_one_folder_do_not_delete_each_other_s_work(tmp_path):
    final = tmp_path / "entry"

    def outer(folder):
        folder.mkdir()
        (folder / "a").write_text("first")
        # A second process fills the same entry while the first is still writing.
        write_folder_atomically(final, lambda other: (other.mkdir(), (other / "a").write_text("second")))
        assert (folder / "a").read_text() == "first"

    write_folder_atomically(final, outer)
    assert (final / "a").read_text() == "first"
    assert [path.name for path in tmp_path.iterdir()] == ["entry"]


def test_a_file_write_interrupted_before_its_rename_keeps_the_old_file_and_names_its_temporary_to_be_swept(
    tmp_path, monkeypatch
):
    atomic_write_text(tmp_path / "state.json", "{}")
    temporaries = []

    def killed(source, target):
        temporaries.append(Path(source).name)
        raise KeyboardInterrupt  # as if the process stopped between writing and renaming

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(tmp_path / "state.json", '{"more": 1}')
    monkeypatch.undo()
    assert (tmp_path / "state.json").read_text() == "{}"
    assert [path.name for path in tmp_path.iterdir()] == ["state.json"]
    # A process killed outright leaves its temporary behind: it carries the prefix a rerun sweeps.
    (leftover,) = temporaries
    assert leftover.startswith(f"{TMP_PREFIX}state.json.")
    (tmp_path / leftover).write_text("half")
    remove_temporaries(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["state.json"]
