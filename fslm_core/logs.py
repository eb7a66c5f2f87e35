"""Logging through structlog on top of the standard library's ``logging``.

A library configures nothing: fslm's loggers are ``logging`` loggers under
their module names (``fslm_core....``), silent until the application sets up
logging. The ``fslm`` command does that with :func:`configure_logging`:
readable lines on stderr, or JSON lines with ``--log-json``.
"""

from __future__ import annotations

import logging
import sys

import structlog

# What every fslm log line carries; the handler the application installs renders it.
_PROCESSORS = [
    structlog.stdlib.filter_by_level,
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
]

# Python prints a library's warnings itself when no handler is set up; fslm stays quiet until asked.
logging.getLogger("fslm_core").addHandler(logging.NullHandler())


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now (test runners and notebooks replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_handler: logging.Handler | None = None


def configure_logging(json: bool = False, level: str = "INFO") -> None:
    """Show fslm's log lines at ``level`` and above on stderr, as text or JSON (the CLI calls this).

    Other libraries' warnings and errors are shown the same way.

    Replaces the handler an earlier call installed, so calling it again (a CLI
    run inside a test process) does not print lines twice.
    """
    global _handler
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    renderer = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            # Lines logged through plain ``logging`` (plugins, other libraries) get a level and time stamp too.
            foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)],
        )
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    # Only fslm's own loggers follow ``level``; other libraries keep the root's (warnings and errors).
    logging.getLogger("fslm_core").setLevel(numeric_level)
    _handler = handler


def get_logger(name: str):
    """A structlog logger writing to the ``logging`` logger ``name``; silent unless the application shows it."""
    return structlog.wrap_logger(
        logging.getLogger(name), processors=_PROCESSORS, wrapper_class=structlog.stdlib.BoundLogger
    )
