"""What a caller hears while a stack runs: each stage's message as it is recorded, a streamed stage's text.

``fslm serve`` streams from it; the engine calls it from the thread that runs
the stack, so an implementation hands events to its own thread or loop.
"""

from __future__ import annotations

from ..declarations import Stage
from ..messages import Message


class RunListener:
    """Does nothing by default; a subclass overrides what it needs. ``index`` is the input's place in the run."""

    def streams(self, stage: Stage) -> bool:
        """Whether ``stage``'s text should be reported token by token (it costs a detokenisation per step)."""
        return False

    def on_text(self, index: int, stage: str, text: str) -> bool:
        """The text ``stage`` has written so far for input ``index``; return False to stop generating it."""
        return True

    def on_message(self, index: int, message: Message) -> None:
        """``message`` was recorded for input ``index`` (generated, or read from the stage cache)."""

    def cancelled(self, index: int) -> bool:
        """Whether input ``index`` no longer needs running (its later stages are skipped)."""
        return False
