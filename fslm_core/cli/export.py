"""``fslm export``: a stack as another runtime serves it (llama.cpp's llama-server, with fslm-plugin-remote)."""

from __future__ import annotations

from pathlib import Path

import click

from .app import chosen_stack, cli


@cli.command("export")
@click.argument("stack_path", metavar="STACK")
@click.option("--to", "runtime", required=True, help="The exporter, e.g. llama.cpp (see `fslm plugins`).")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--option", "options", multiple=True, metavar="NAME=VALUE", help="An exporter's option (repeatable).")
def export_command(stack_path, runtime, folder, options):
    """Write STACK (a stack file, folder or name) into FOLDER in the form RUNTIME serves, and print the
    command that serves it and the stack file that runs there."""
    from ..plugins import get_registry

    exporter = get_registry().get("exporters", runtime, field="--to")
    values = {}
    for item in options:
        name, equals, value = item.partition("=")
        if not equals or name not in exporter.options:
            known = ", ".join(exporter.options) or "none"
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE, NAME one of: {known}", param_hint="--option")
        values[name] = value
    result = exporter.export(chosen_stack(stack_path, None, None, None), Path(folder), values)
    click.echo(f"wrote {len(result.files)} files to {Path(folder).resolve()}")
    if result.command:
        click.echo(f"serve it with:\n  {result.command}")
    if result.stack_file is not None:
        click.echo(f'then run the stack there:\n  fslm run --stack {result.stack_file} "..."')
