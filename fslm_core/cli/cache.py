"""``fslm cache``: what fslm keeps on disk to start faster, and freeing it."""

from __future__ import annotations

import json

import click

from ..files import cache_dir
from ..runtime import weights_cache
from ..runtime.stage_cache import StageCache
from .app import cli


@cli.group("cache")
def cache_group():
    """Show or free fslm's cache ($FSLM_CACHE_DIR, default ~/.cache/fslm)."""


@cache_group.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def cache_info(as_json):
    """List the cached de-quantised models (size, whether each is whole) and the stage cache's size."""
    entries = weights_cache.cache_entries()
    stages = StageCache().info()
    if as_json:
        rows = [{"name": e.name, "path": str(e.path), "bytes": e.bytes, "problem": e.problem} for e in entries]
        click.echo(json.dumps({"cache_dir": str(cache_dir()), "models": rows, "stages": stages}, indent=2))
        return
    click.echo(f"cache folder: {cache_dir()}" + ("" if weights_cache.cache_enabled() else " (models switched off)"))
    for entry in entries:
        state = "ok" if entry.problem is None else f"damaged ({entry.problem}); rebuilt at next load"
        click.echo(f"  {entry.name}  {entry.bytes / 1e6:.0f} MB  {state}")
    click.echo(
        f"models: {len(entries)} entries, {sum(e.bytes for e in entries) / 1e6:.0f} MB"
        if entries
        else "models: none cached"
    )
    click.echo(f"stage outputs: {stages['entries']} entries, {stages['bytes'] / 1e6:.1f} MB ({stages['path']})")


@cache_group.command("clear")
def cache_clear():
    """Remove the cached models and stage outputs; the next load of each model rebuilds its entry."""
    freed = weights_cache.clear_cache()
    click.echo(f"freed {freed / 1e6:.0f} MB of models from {weights_cache.models_cache()}")
    stages = StageCache()
    click.echo(f"freed {stages.clear() / 1e6:.1f} MB of stage outputs from {stages.path}")
