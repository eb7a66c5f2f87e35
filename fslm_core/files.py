"""Durability rules for everything fslm writes.

An interrupted run must leave only whole files and folders: each is written
under a temporary name in its final folder and renamed into place (a rename
within one file system is atomic). Temporary names start with
:data:`TMP_PREFIX`, so a rerun can sweep what an interruption left behind.
Files that a later run reads back (a distillation's manifest, a training
state) are :class:`VersionedJson` objects carrying a format marker and version, and the output
folder of a resumable run holds that run only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

TMP_PREFIX = ".tmp-"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file private (0600); give it the mode a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, content: Any) -> None:
    """Write ``content`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(content, indent=2))


def temporary_name(final: Path) -> Path:
    """Where ``final`` is written before :func:`replace_folder` renames it into place."""
    return final.parent / f"{TMP_PREFIX}{final.name}"


def temporary_folder(final: Path) -> Path:
    """:func:`temporary_name` of ``final``, cleared of what an interrupted write left there."""
    tmp = temporary_name(final)
    shutil.rmtree(tmp, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def replace_folder(tmp: Path, final: Path) -> Path:
    """Rename the finished temporary folder ``tmp`` to ``final``, replacing an older ``final``.

    The older folder is renamed aside before the new one is renamed in and only then deleted, so an
    interruption leaves one of the two whole (the old one under a temporary name), never a half-deleted one.
    When another process renamed its own copy in first, that copy is kept and ``tmp`` is deleted.
    """
    old = None
    if final.exists():
        old = _private_name(final, "replaced-")
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            if old is not None:
                os.rename(old, final)
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another writer's copy won the race
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_folder_atomically(final: Path, write: Callable[[Path], None]) -> Path:
    """Write a folder under a temporary name with ``write(tmp)``, then rename it into place.

    The temporary name is this write's own (``tmp`` does not exist yet), so two processes writing the same
    folder at once, such as two runs filling one cache entry, do not delete each other's work; what a
    process that no longer runs left behind is removed first.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(final)
    tmp = _private_name(final)
    try:
        write(tmp)
        return replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _private_name(final: Path, kind: str = "") -> Path:
    """A temporary name beside ``final`` that only this process uses: it carries the process id."""
    return final.parent / f"{TMP_PREFIX}{kind}{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def _remove_abandoned(final: Path) -> None:
    """Remove the temporary copies of ``final`` whose writing process no longer runs (killed mid-write)."""
    for kind in ("", "replaced-"):
        for stale in final.parent.glob(f"{TMP_PREFIX}{kind}{final.name}.*.*"):
            pid = stale.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not _process_runs(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_temporaries(folder: Path) -> None:
    """Remove what an interrupted write left in ``folder`` (temporary files and folders)."""
    for stale in folder.glob(f"{TMP_PREFIX}*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@dataclass(frozen=True)
class VersionedJson:
    """A JSON file that fslm writes and reads back: one object that starts with ``{marker: version}``.

    ``what`` names the file in errors ("a training state of fslm"), ``remedy``
    says what to do with one that is not valid JSON, and ``field`` prefixes
    error messages with the argument at fault ("output: ").
    """

    name: str
    marker: str
    version: int
    what: str
    remedy: str
    field: str = ""

    def read(self, folder: Path) -> dict | None:
        """The object in ``folder``; None if there is no file; an error if the file is not this kind."""
        file = folder / self.name
        if not file.is_file():
            return None
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise InputError(f"{self.field}{file} is not valid JSON; {self.remedy}") from None
        if not isinstance(content, dict) or content.get(self.marker) != self.version:
            raise InputError(f"{self.field}{file} is not {self.what} (format {self.version})")
        return content

    def write(self, folder: Path, content: dict) -> None:
        """Write ``content`` (stamped with the marker and version) to ``folder``, atomically."""
        atomic_write_json(folder / self.name, {self.marker: self.version, **content})


def existing_run_state(
    folder: Path,
    state: VersionedJson,
    purpose: str = "",
    check_folder: Callable[[Path], None] | None = None,
) -> dict | None:
    """The state of the earlier run in output ``folder`` to continue, or None for a new or empty folder.

    A resumable command's output folder holds that command's run only: a file,
    or a folder with anything else in it, is refused. ``check_folder`` may
    refuse more before the state is read; ``purpose`` ends the message for a
    file (" for the trained stack"). Whether the earlier run matches this one
    is the caller's to check.
    """
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output: {folder} is a file; give a folder{purpose}")
    if not folder.is_dir():
        return None
    if check_folder is not None:
        check_folder(folder)
    content = state.read(folder)
    if content is None and any(not path.name.startswith(".") for path in folder.iterdir()):
        raise InputError(f"output: {folder} is not empty and holds no {state.name}; choose an empty or new folder")
    return content


def check_writable_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written; errors name ``option``.

    Its folder is created if missing. A parent that is a file, a folder that
    cannot be created, or one where no file can be written (read-only, ``/sys``)
    each end in one line; nothing is left behind by the check.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"{option}: {path} is a folder; give a file")
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{option}: {parent} is a file, not a folder; choose another location for {path.name}")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with open(path, "a", encoding="utf-8"):
                pass
        else:
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=TMP_PREFIX):
                pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InputError(f"{option}: cannot write {path} ({reason.lower()}); choose another location") from None


def safe_file_name(name: str) -> str:
    """``name`` with every character but letters, digits, ``-``, ``_`` and ``.`` replaced by ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


CACHE_DIR_ENV = "FSLM_CACHE_DIR"


def cache_dir() -> Path:
    """Where fslm keeps files it can rebuild (assembled weights): ``$FSLM_CACHE_DIR``, else the user's cache folder."""
    configured = os.environ.get(CACHE_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "fslm"
