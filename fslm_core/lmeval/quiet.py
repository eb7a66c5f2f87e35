"""lm-eval without the lines it prints past its caller's wishes, for fslm's own commands.

``fslm eval`` and ``python -m fslm_core.lmeval`` run lm-eval in their process;
these keep its output to what the command shows.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_git_probe() -> Iterator[None]:
    """lm-eval's ``git describe`` without its ``fatal: not a git repository`` on stderr outside a repository.

    lm-eval records the commit of the working directory in its results by
    running git with stderr left open; the result is the same, only quiet.
    """
    import lm_eval.evaluator
    from lm_eval.loggers.utils import get_commit_from_path

    def commit_hash() -> str | None:
        try:
            output = subprocess.check_output(["git", "describe", "--always"], stderr=subprocess.DEVNULL)
            return output.strip().decode()
        except (subprocess.CalledProcessError, OSError):
            return get_commit_from_path(os.getcwd())

    original = lm_eval.evaluator.get_git_commit_hash
    lm_eval.evaluator.get_git_commit_hash = commit_hash
    try:
        yield
    finally:
        lm_eval.evaluator.get_git_commit_hash = original


@contextmanager
def no_context_bars() -> Iterator[None]:
    """Hide the bar lm-eval draws while it builds a task's prompts (it asks no caller); ``fslm eval`` shows its own."""
    import lm_eval.api.task

    original = lm_eval.api.task.tqdm
    lm_eval.api.task.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        lm_eval.api.task.tqdm = original
