"""The ``fslm`` command line: one module per group of commands, all on the group in :mod:`.app`."""

from . import cache, calibrate, eval, experiment, export, listing, report, run, serve, train  # noqa: F401  (each adds its commands)
from .app import cli, main
from .listing import plugin_listing

__all__ = ["cli", "main", "plugin_listing"]
