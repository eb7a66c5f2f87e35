"""``fslm plugins``: what the installed plugins provide, who provides it, and which failed."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from ..api.benchmarks import yaml_folders
from ..errors import InputError
from ..plugins import DISABLE_ENV, get_registry
from ..runtime import AUTO_DTYPE_ENV, with_local_weights
from ..runtime.dtype_choice import forced_dtype, stored_probe
from .app import cli


def plugin_listing() -> dict:
    registry = get_registry()
    listing: dict = {}
    for kind in registry.kinds:
        rows = []
        for name in registry.names(kind):
            provider = registry.provider(kind, name)
            row = {
                "name": name,
                "plugin": provider.plugin,
                "distribution": provider.distribution,
                "version": provider.version,
            }
            item = registry.kinds[kind].items[name]
            if kind == "models":
                memory = item.memory_estimate_bytes
                used = with_local_weights(item)  # where a stage naming this id loads from
                row.update(
                    backend=item.backend,
                    source=used.source,
                    registered_source=item.source,
                    installed=used.source is not None,
                    dtype=item.dtype,
                    context_length=item.context_length,
                    memory_estimate_gb=round(memory / 1e9, 2) if memory else None,
                    lora_target_modules=list(item.lora_target_modules or []),
                    description=item.description,
                )
            else:
                row["description"] = getattr(item, "description", "") or ""
            rows.append(row)
        listing[kind] = rows
    listing["broken"] = [vars(broken) for broken in registry.broken]
    probe = stored_probe()
    listing["auto_dtype"] = asdict(probe) if probe is not None else None
    return listing


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def plugins(as_json: bool) -> None:
    """List what the installed plugins provide, and who provides it."""
    listing = plugin_listing()
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    for kind, rows in listing.items():
        if kind in ("broken", "auto_dtype"):
            continue
        click.echo(f"{kind}:")
        if not rows:
            click.echo("  (none)")
        for row in rows:
            provider = f"{row['plugin']} ({row['distribution']} {row['version']})"
            extra = ""
            if kind == "models":
                memory = f"~{row['memory_estimate_gb']} GB" if row["memory_estimate_gb"] else "size unknown"
                installed = "" if row["installed"] else ", weights not installed"
                if row["source"] != row["registered_source"]:
                    installed += f", weights from {row['source']}"
                extra = f"  [{row['backend']}, {row['dtype']}, {memory}{installed}]"
            click.echo(f"  {row['name']:<32} {provider}{extra}")
    forced = forced_dtype()
    if forced is not None:
        click.echo(f"auto dtype: {forced} (forced by {AUTO_DTYPE_ENV})")
    elif listing["auto_dtype"] is not None:
        probe = stored_probe()
        click.echo(f"{probe.summary()}; measured {probe.measured} on {probe.cpu} with {probe.threads} threads")
    else:
        click.echo("auto dtype: not measured on this machine yet (the first run in dtype auto times each dtype)")
    for broken in listing["broken"]:
        click.echo(
            f"broken plugin {broken['name']} ({broken['distribution']}): {broken['error']} "
            f"[during {broken['stage']}; disable with {DISABLE_ENV}={broken['name']}]"
        )


@cli.command("tasks-dir")
def tasks_dir() -> None:
    """Print the folder of the benchmark tasks' lm-eval YAML files, for lm-eval's --include_path.

    \b
    lm_eval --model fslm --model_args model=smollm2-135m-instruct \\
        --include_path "$(fslm tasks-dir)" --tasks local_arc_easy --limit 5
    """
    registry = get_registry()
    folders = yaml_folders(registry.benchmark(name) for name in registry.names("benchmarks"))
    if not folders:
        raise InputError("no installed plugin provides lm-eval task files; install fslm-plugin-benchmarks")
    for folder in folders:
        click.echo(str(folder))
