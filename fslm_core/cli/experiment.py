"""``fslm experiment``: distil, train and evaluate a stack against single-model baselines, resumably."""

from __future__ import annotations

import shlex
import sys

import click

from .app import cli


@cli.command("experiment")
@click.argument("config", type=click.Path())
@click.option("--quick", is_flag=True, help="Tens of examples, one epoch, a few documents per task (minutes).")
@click.option("--output", type=click.Path(), help="Work folder (default: the config's `output`).")
@click.option("--until", help="Stop after this step (distill, filter, train-stack, ... report).")
@click.option("--only", help="Run just this step, e.g. `--only report` to rewrite the report from what has finished.")
@click.option(
    "--verify",
    "verify_results",
    multiple=True,
    metavar="SYSTEM:TASK",
    help="Rerun finished results (SYSTEM:TASK, SYSTEM, :TASK or all; repeatable) into a scratch folder and check "
    "every document's score against the recorded one; exit status 1 if any differs. Runs no step.",
)
def experiment_command(config, quick, output, until, only, verify_results):
    """Run the experiment in CONFIG (YAML) to the end, or resume it: finished steps are skipped.

    Prints which step it is on. An interrupted run continues from its last finished step, and within
    distillation and training from their checkpoints. A config with `kind: comparison` compares the
    systems it declares (stacks, named stacks, models alone) on the same documents, with paired tests.
    """
    from ..experiment import (
        is_comparison,
        load_comparison_config,
        load_experiment_config,
        run_comparison,
        run_experiment,
    )

    overrides = {"output": output} if output else None
    if verify_results:
        _verify(config, overrides, quick, verify_results)
        return
    if is_comparison(config):
        if quick:
            raise click.UsageError("--quick applies to the paper's experiment; a comparison runs what it declares")
        command = shlex.join(["fslm", *sys.argv[sys.argv.index("experiment") :]]) if "experiment" in sys.argv else None
        run_comparison(
            load_comparison_config(config, overrides), only=only, until=until, echo=click.echo, command=command
        )
        return
    settings = load_experiment_config(config, quick=quick, overrides=overrides)
    # As typed, without the logging options before the command name.
    command = shlex.join(["fslm", *sys.argv[sys.argv.index("experiment") :]]) if "experiment" in sys.argv else None
    run_experiment(settings, until=until, only=only, echo=click.echo, progress=True, command=command)


def _verify(config, overrides, quick: bool, wanted) -> None:
    from ..experiment import (
        comparison_plan,
        is_comparison,
        load_comparison_config,
        load_experiment_config,
        paper_plan,
        verify,
    )
    from ..plugins import get_registry

    if is_comparison(config):
        settings = load_comparison_config(config, overrides)
        plan = comparison_plan(settings)
    else:
        settings = load_experiment_config(config, quick=quick, overrides=overrides)
        plan = paper_plan(settings, settings.output, get_registry())
    checked = verify(plan, settings.output, wanted, echo=click.echo)
    failed = [check for check in checked if not check.reproduced]
    click.echo(f"{len(checked) - len(failed)} of {len(checked)} results reproduced document by document")
    if failed:
        sys.exit(1)
