"""``fslm eval``: evaluate a stack with lm-evaluation-harness."""

from __future__ import annotations

import click

from .app import chosen_stack, cli, count_option, dtype_option, seed_option, stack_options


@cli.command("eval")
@stack_options
@click.option("--tasks", required=True, help="Comma-separated lm-eval tasks, e.g. local_arc_easy (see `fslm plugins`).")
@click.option("--limit", type=float, help="Documents per task (a fraction below 1).")
@click.option("--num-fewshot", type=click.IntRange(min=0), help="Shots per prompt (default: each task's own).")
@click.option(
    "--output", type=click.Path(), help="Folder for results.json, traces_<task>.json, samples and report.html."
)
@click.option("--baseline", help="Also evaluate this model id alone (one stage, no adapter) on the same documents.")
@click.option("--batch-size", default="16", show_default=True, help="Inputs per model call (or 'auto').")
@click.option("--max-batch-size", type=click.IntRange(min=1), help="Batch size that 'auto' uses.")
@click.option("--device", help="torch device, e.g. cpu or cuda:0 (default: cuda if available).")
@click.option("--gen-kwargs", help="lm-eval generation overrides for generate tasks, e.g. max_gen_toks=64.")
@click.option(
    "--final-prompt",
    type=click.Choice(["stage", "plain"]),
    default="stage",
    show_default=True,
    help="Final stage's prompt: as the stage runs, or its filled template as plain text (lm-eval's format).",
)
@click.option("--log-samples", is_flag=True, help="Also write lm-eval's per-document samples to --output.")
@click.option(
    "--report",
    "trace_report",
    is_flag=True,
    help="Also write report.html to --output: the stack's traces as a page (see `fslm report`).",
)
@count_option("--bootstrap-iters", 100_000, "Bootstrap iterations for stderr (0: none).", minimum=0)
@seed_option
@dtype_option
@click.option("--data-dir", type=click.Path(), help="Folder of the local benchmark data (sets FSLM_DATA_DIR).")
@click.option(
    "--data-file",
    "data_files",
    multiple=True,
    metavar="TASK=PATH",
    help="Score another file of the same format for one local task (repeatable).",
)
def eval_command(
    stack_path,
    decomposition,
    model,
    model_path,
    tasks,
    limit,
    output,
    baseline,
    data_dir,
    data_files,
    trace_report,
    **settings,
):
    """Evaluate a stack with lm-evaluation-harness, optionally side by side with a single model."""
    if limit is not None and not limit > 0:  # before lm-eval loads: a mistyped option is answered at once
        raise click.BadParameter(
            f"expected a count of documents per task (1 or more) or a share below 1 (such as 0.1), got {limit:g}",
            param_hint="--limit",
        )
    from ..lmeval import (
        EvalSettings,
        evaluate_command,
        no_context_bars,
        parse_data_files,
        quiet_git_probe,
        split_tasks,
    )

    settings = EvalSettings(
        tasks=split_tasks(tasks),
        limit=int(limit) if limit is not None and limit >= 1 else limit,
        data_files=parse_data_files(data_files),
        **settings,
    )
    stack = chosen_stack(stack_path, decomposition, model, model_path)
    with quiet_git_probe(), no_context_bars():
        evaluate_command(
            stack,
            settings,
            output=output,
            baseline=baseline,
            data_dir=data_dir,
            echo=click.echo,
            trace_report=trace_report,
        )
