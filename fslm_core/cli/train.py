"""``fslm distill`` and ``fslm train``: distil per-stage targets, then train one adapter per stage."""

from __future__ import annotations

import click

from ..runtime.stack_choice import DEFAULT_DECOMPOSITION, DEFAULT_MODEL
from .app import batch_size_option, chosen_stack, cli, count_option, dtype_option, seed_option, stack_options


@cli.command("distill")
@click.option(
    "--data",
    required=True,
    type=click.Path(),
    help="Alpaca-format data: a JSON array or .jsonl of {instruction, input, output} rows.",
)
@click.option("--output", required=True, type=click.Path(), help="Folder for the distilled data; rerun to resume.")
@click.option("--decomposition", help=f"Decomposition whose stages get targets (default: {DEFAULT_DECOMPOSITION}).")
@click.option("--teacher", help=f"Model id that writes the targets (default: {DEFAULT_MODEL}); see `fslm plugins`.")
@click.option("--teacher-model-path", type=click.Path(), help="Local folder with the teacher's weights (offline use).")
@click.option(
    "--teacher-prompt",
    type=click.Choice(["auto", "notes", "per-stage"]),
    help="notes: one answer-aware call per example writes all intermediate targets; per-stage: one call per "
    "stage; auto (default): notes when the decomposition has them.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Distil only the first N usable examples.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="Cap on tokens per teacher target.")
@batch_size_option
@count_option("--shard-size", 64, "Examples per written shard (the most an interruption loses).")
@seed_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def distill_command(data, output, as_json, **settings):
    """Have a teacher model write every stage's training target for the examples in --data."""
    from ..distillation import DistillConfig, distill

    # Options left out take DistillConfig's defaults (the default decomposition and teacher).
    config = DistillConfig(**{name: value for name, value in settings.items() if value is not None})
    summary = distill(data, output, config, progress=True)
    click.echo(summary.model_dump_json(indent=2) if as_json else summary.render())


@cli.command("train")
@click.argument("distilled", type=click.Path())
@stack_options
@click.option("--output", required=True, type=click.Path(), help="Folder for the trained stack; rerun to resume.")
@click.option("--config", "config_file", type=click.Path(), help="YAML/JSON file of training settings.")
@click.option("--epochs", type=click.IntRange(min=1))
@click.option("--learning-rate", type=float)
@click.option("--batch-size", type=click.IntRange(min=1), help="Examples per batch and process.")
@click.option("--rank", type=click.IntRange(min=1), help="LoRA rank.")
@click.option("--alpha", type=float, help="LoRA alpha.")
@click.option("--dropout", type=float, help="LoRA dropout.")
@click.option("--max-length", type=click.IntRange(min=8), help="Tokens of prompt plus target.")
@click.option("--target-modules", help="Comma-separated module names LoRA adapts (default: the model's).")
@click.option("--stages", help="Comma-separated stages to train (default: all).")
@click.option("--eval-fraction", type=float, help="Share of examples held out to score each stage.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="Optimizer steps between checkpoints.")
@click.option(
    "--start-from",
    type=click.Path(),
    help="A trained stack's folder: each stage starts from its adapter there (a further epoch, or more data).",
)
@click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), help="Autocast on GPUs.")
@dtype_option
@click.option("--seed", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train_command(distilled, stack_path, decomposition, model, model_path, output, config_file, as_json, **settings):
    """Fine-tune one LoRA adapter per stage on DISTILLED targets; save the trained stack in --output.

    The stack is --stack, or the distilled data's decomposition built for --model. Rerun the same
    command to resume an interrupted run.
    """
    from ..distillation import load_distilled
    from ..training import is_main_process, load_train_config, train_stack

    data = load_distilled(distilled)
    stack = chosen_stack(stack_path, decomposition or (None if stack_path else data.decomposition), model, model_path)
    config = load_train_config(config_file, settings)
    result = train_stack(data, output, config, stack=stack, progress=True)
    if is_main_process():
        click.echo(result.model_dump_json(indent=2) if as_json else result.render())


@cli.command("filter")
@click.argument("distilled", type=click.Path())
@click.option("--output", required=True, type=click.Path(), help="Folder for the filtered copy (replaced whole).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def filter_command(distilled, output, as_json):
    """Copy DISTILLED data keeping the examples whose teacher targets pass their checks, tidied to their role."""
    import json

    from ..distillation import filter_distilled

    report = filter_distilled(distilled, output)
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else report.render())
