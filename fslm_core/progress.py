"""Progress of long jobs (distillation, training, a stack's stages): a bar on a terminal, lines in a log.

A bar redrawn with carriage returns turns a background run's log into one
unreadable line. When stderr is not a terminal, progress is printed instead as
whole lines, one every ``FSLM_PROGRESS_SECONDS`` (30 by default), each with
the count, rate, ETA and whatever the job adds (a loss); runs shorter than
that print nothing.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

INTERVAL_ENV = "FSLM_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def line_interval() -> float:
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    try:
        return max(float(raw), 0.0) if raw else DEFAULT_INTERVAL
    except ValueError:
        return DEFAULT_INTERVAL


class ProgressLines(tqdm):
    """A tqdm that writes a full line every ``interval`` seconds instead of redrawing a bar."""

    def __init__(self, *args, interval: float | None = None, **kwargs):
        interval = line_interval() if interval is None else interval
        kwargs.update(mininterval=interval, maxinterval=max(interval, 10.0), delay=interval, file=sys.stderr)
        kwargs.setdefault("ascii", True)
        self._lines = 0
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        if msg == "":  # tqdm clearing its bar: there is no bar to clear
            return False
        text = (msg if msg is not None else self.__str__()).strip()
        # The bar part of the meter ("|####  |") says nothing a percentage doesn't.
        self.fp.write(_without_bar(text) + "\n")
        self.fp.flush()
        self._lines += 1
        return True

    # A new loss or stage name shows in the next periodic line, not in a line of its own.
    def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_description(self, desc=None, refresh=False):
        super().set_description(desc, refresh=False)

    def close(self):
        if self.disable:
            return
        if self._lines:  # a closing line, so the log shows where the job ended
            self.display()
        self.leave = False
        super().close()


def _without_bar(text: str) -> str:
    first = text.find("|")
    last = text.rfind("|")
    if 0 <= first < last:
        return (text[:first].rstrip() + " " + text[last + 1 :].lstrip()).strip()
    return text


def progress_bar(*, total: int | None, desc: str, unit: str, show: bool = True, initial: int = 0) -> tqdm:
    """A progress bar on a terminal, periodic :class:`ProgressLines` otherwise, nothing when not ``show``."""
    if not show:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial)
    return ProgressLines(total=total, desc=desc, unit=unit, initial=initial)


__all__ = ["INTERVAL_ENV", "ProgressLines", "line_interval", "progress_bar"]
