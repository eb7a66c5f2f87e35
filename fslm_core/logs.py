"""Logging through structlog on top of the standard library's ``logging``.

A library configures nothing: fslm's loggers are ``logging`` loggers under
their module names (``fslm_core....``), silent until the application sets up
logging. The ``fslm`` command does that with :func:`configure_logging`:
readable lines on stderr, or JSON lines with ``--log-json``; other libraries'
lines and warnings only from one level above fslm's own.
"""

from __future__ import annotations

import logging
import os
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

OWN_PREFIX = "fslm"  # fslm_core, fslm_plugin_*, fslm_lm_eval: lines a user of fslm asked for
# Other libraries' lines and Python warnings show one level above fslm's own: errors only by default,
# warnings with -v, information with -vv.
_OTHERS_LEVEL = {logging.DEBUG: logging.INFO, logging.INFO: logging.WARNING, logging.WARNING: logging.ERROR}


class _LevelByOrigin(logging.Filter):
    """Lets fslm's lines through from ``own`` up, everyone else's from ``others`` up."""

    def __init__(self, own: int, others: int) -> None:
        super().__init__()
        self.own, self.others = own, others

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= (self.own if record.name.startswith(OWN_PREFIX) else self.others)


def configure_logging(json: bool = False, level: str = "INFO") -> None:
    """Show log lines on stderr, as text or JSON (the CLI calls this): fslm's from ``level``, others' above it.

    fslm's own loggers (``fslm_core``, plugins named ``fslm...``) show from
    ``level``; other libraries' lines and Python warnings show from the next
    level up, so the default (``WARNING``) shows fslm's warnings and everyone's
    errors, ``INFO`` (``-v``) adds fslm's progress and other libraries'
    warnings, ``DEBUG`` (``-vv``) shows nearly everything. Libraries that print
    by themselves (transformers' own handler, datasets' progress bars) are told
    through their environment variables, unless the user set those.

    Replaces the handler an earlier call installed, so calling it again (a CLI
    run inside a test process) does not print lines twice.
    """
    global _handler
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    others_level = _OTHERS_LEVEL.get(numeric_level, max(numeric_level, logging.ERROR))
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
    handler.addFilter(_LevelByOrigin(numeric_level, others_level))
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(min(numeric_level, others_level))
    logging.getLogger("fslm_core").setLevel(numeric_level)
    logging.captureWarnings(True)  # Python warnings become log lines of "py.warnings": other libraries' level
    if others_level > logging.WARNING:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    _handler = handler


def get_logger(name: str):
    """A structlog logger writing to the ``logging`` logger ``name``; silent unless the application shows it."""
    return structlog.wrap_logger(
        logging.getLogger(name), processors=_PROCESSORS, wrapper_class=structlog.stdlib.BoundLogger
    )
