"""``fslm report``: a page of saved traces to read in a browser."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError
from ..runtime.costs import traced_stage_costs
from ..trace_report import read_trace_file, write_trace_report
from .app import cli


@cli.command("report")
@click.argument("traces", nargs=-1, required=True, type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    help="HTML file to write (default for one TRACES file: its name with the suffix .html, beside it).",
)
@click.option("--title", help="The page's title (default: 'Traces of <stack>').")
def report_command(traces, output, title):
    """Write one HTML page showing each input's messages stage by stage, and a per-stage cost table.

    TRACES are files `fslm run --output FILE` wrote (one JSON trace per line)
    or `fslm eval`'s traces_<task>.json; several go into one page, in order. The
    page is self-contained: open it in any browser, offline.
    """
    sources = [Path(path) for path in traces]
    if output is None and len(sources) > 1:
        raise InputError("--output: give the HTML file to write when reporting several traces files")
    destination = Path(output) if output else sources[0].with_suffix(".html")
    if destination.is_dir():
        raise InputError(f"--output: {destination} is a folder; give the HTML file to write")
    if any(destination.resolve() == source.resolve() for source in sources):
        raise InputError(f"--output: {destination} is a traces file to read; give another file")
    entries = [entry for source in sources for entry in read_trace_file(source)]
    costs = traced_stage_costs([entry.trace for entry in entries])
    write_trace_report(destination, entries, costs, title)
    click.echo(f"{len(entries)} traces: {destination}")
