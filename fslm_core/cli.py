"""The ``fslm`` command line.

Errors caused by input (:class:`~fslm_core.errors.FslmError`) print one line
on stderr and exit 1, without a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from .declarations import Stack
from .errors import FslmError, InputError, StackChoiceError, format_validation_error
from .logs import configure_logging
from .plugins import CLI_ARGUMENTS, DEFAULT_DECOMPOSITION, DEFAULT_MODEL, DISABLE_ENV, get_registry, resolve_stack
from .runtime import with_local_weights


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-json", is_flag=True, help="Log lines as JSON (for machines).")
@click.option("--log-level", default="WARNING", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.option("-v", "--verbose", count=True, help="Log more: -v for INFO, -vv for DEBUG (overrides --log-level).")
@click.version_option(package_name="fslm-core")
def cli(log_json: bool, log_level: str, verbose: int) -> None:
    """Fine-tuned stacks of small language models."""
    if verbose:
        log_level = "INFO" if verbose == 1 else "DEBUG"
    configure_logging(json=log_json, level=log_level)


# Stacks --------------------------------------------------------------------


def chosen_stack(stack_path: str | None, decomposition: str | None, model: str | None, model_path: str | None) -> Stack:
    """The stack a command works on: a stack file, or a decomposition built for a model."""
    try:
        return resolve_stack(stack_path, decomposition, model, model_path, arguments=CLI_ARGUMENTS)
    except StackChoiceError as error:
        raise click.UsageError(str(error)) from None


def stack_options(command):
    options = [
        click.option("--stack", "stack_path", type=click.Path(), help="Stack file (.yaml) or stack folder."),
        click.option(
            "--decomposition",
            help=f"Registered decomposition to build a stack from (default: {DEFAULT_DECOMPOSITION}).",
        ),
        click.option("--model", help=f"Model id for --decomposition (default: {DEFAULT_MODEL}); see `fslm plugins`."),
        click.option("--model-path", type=click.Path(), help="Local folder with the model's weights (offline use)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def read_prompts(prompts: tuple[str, ...], input_file: str | None) -> list[str]:
    collected = list(prompts)
    if input_file:
        path = Path(input_file)
        if not path.is_file():
            raise InputError(f"--input: file not found: {path}")
        collected += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not collected:
        raise InputError("no prompts given: pass a prompt or --input FILE with one prompt per line")
    return collected


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


@cli.command()
@click.argument("prompts", nargs=-1)
@stack_options
@click.option("--input", "input_file", type=click.Path(), help="Text file with one prompt per line.")
@click.option("--output", "output_file", type=click.Path(), help="Append one JSON trace per line to this file.")
@click.option("--resume", is_flag=True, help="With --output: skip prompts whose traces the file already holds.")
@click.option("--json", "as_json", is_flag=True, help="Print traces as JSON lines instead of text.")
@click.option("--answers-only", is_flag=True, help="Print only the final answers.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--chunk-size",
    default=256,
    show_default=True,
    type=click.IntRange(min=1),
    help="Prompts per engine run; --output is written after each chunk.",
)
@click.option("--seed", default=0, show_default=True, type=int)
def run(
    prompts,
    stack_path,
    decomposition,
    model,
    model_path,
    input_file,
    output_file,
    resume,
    as_json,
    answers_only,
    batch_size,
    chunk_size,
    seed,
):
    """Run a stack on PROMPTS and print each answer with its per-stage trace."""
    stack = chosen_stack(stack_path, decomposition, model, model_path)
    collected = read_prompts(prompts, input_file)
    output = Path(output_file) if output_file else None
    done = count_lines(output) if output and resume else 0
    if output and output.exists() and not resume and output.stat().st_size > 0:
        raise InputError(
            f"--output: {output} already holds traces; pass --resume to continue it or choose another file"
        )
    if done >= len(collected):
        click.echo(f"all {len(collected)} prompts already have traces in {output}", err=True)
        return
    show_progress = len(collected) - done > 1 and sys.stderr.isatty()
    for start in range(done, len(collected), chunk_size):
        traces = stack.run(
            collected[start : start + chunk_size], batch_size=batch_size, seed=seed, progress=show_progress
        )
        if output:
            append_jsonl(output, [trace.to_json() for trace in traces])
        for trace in traces:
            if as_json:
                click.echo(trace.to_json())
            elif answers_only:
                click.echo(trace.answer)
            else:
                click.echo(trace.render() + "\n")


def append_jsonl(path: Path, lines: list[str]) -> None:
    """Append lines and make them durable before the next chunk starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


@cli.command("new-stack")
@click.argument("destination", type=click.Path())
@stack_options
def new_stack(destination, stack_path, decomposition, model, model_path):
    """Write a stack file (DESTINATION.yaml) or folder built from a decomposition, to edit by hand."""
    stack = chosen_stack(stack_path, decomposition, model, model_path)
    click.echo(stack.save(destination))


@cli.command("eval")
@stack_options
@click.option("--tasks", required=True, help="Comma-separated lm-eval tasks, e.g. local_arc_easy (see `fslm plugins`).")
@click.option("--limit", type=float, help="Documents per task (a fraction below 1).")
@click.option("--num-fewshot", type=click.IntRange(min=0), help="Shots per prompt (default: each task's own).")
@click.option("--output", type=click.Path(), help="Folder for results.json, traces_<task>.json and samples.")
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
    "--bootstrap-iters",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Bootstrap iterations for stderr (0: none).",
)
@click.option("--seed", default=0, show_default=True, type=int)
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
    num_fewshot,
    output,
    baseline,
    batch_size,
    max_batch_size,
    device,
    gen_kwargs,
    final_prompt,
    log_samples,
    bootstrap_iters,
    seed,
    data_dir,
    data_files,
):
    """Evaluate a stack with lm-evaluation-harness, optionally side by side with a single model."""
    from .harness import EvalSettings, evaluate_command, parse_data_files, split_tasks

    settings = EvalSettings(
        tasks=split_tasks(tasks),
        limit=int(limit) if limit is not None and limit >= 1 else limit,
        num_fewshot=num_fewshot,
        batch_size=batch_size,
        max_batch_size=max_batch_size,
        device=device,
        gen_kwargs=gen_kwargs,
        log_samples=log_samples,
        bootstrap_iters=bootstrap_iters,
        seed=seed,
        final_prompt=final_prompt,
        data_files=parse_data_files(data_files),
    )
    stack = chosen_stack(stack_path, decomposition, model, model_path)
    evaluate_command(stack, settings, output=output, baseline=baseline, data_dir=data_dir, echo=click.echo)


# Training ------------------------------------------------------------------


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
@click.option("--limit", type=click.IntRange(min=1), help="Distil only the first N usable examples.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="Cap on tokens per teacher target.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--shard-size",
    default=64,
    show_default=True,
    type=click.IntRange(min=1),
    help="Examples per written shard (the most an interruption loses).",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def distill_command(
    data,
    output,
    decomposition,
    teacher,
    teacher_model_path,
    limit,
    max_new_tokens,
    batch_size,
    shard_size,
    seed,
    as_json,
):
    """Have a teacher model write every stage's training target for the examples in --data."""
    from .training import DistillConfig, distill

    config = DistillConfig(
        decomposition=decomposition or DEFAULT_DECOMPOSITION,
        teacher=teacher or DEFAULT_MODEL,
        teacher_model_path=teacher_model_path,
        limit=limit,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        shard_size=shard_size,
        seed=seed,
    )
    summary = distill(data, output, config, progress=sys.stderr.isatty())
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
@click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), help="Autocast on GPUs.")
@click.option("--seed", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train_command(distilled, stack_path, decomposition, model, model_path, output, config_file, as_json, **settings):
    """Fine-tune one LoRA adapter per stage on DISTILLED targets; save the trained stack in --output.

    The stack is --stack, or the distilled data's decomposition built for --model. Rerun the same
    command to resume an interrupted run.
    """
    from .training import is_main_process, load_distilled, load_train_config, train_stack

    data = load_distilled(distilled)
    stack = chosen_stack(stack_path, decomposition or (None if stack_path else data.decomposition), model, model_path)
    config = load_train_config(config_file, settings)
    result = train_stack(data, output, config, stack=stack, progress=sys.stderr.isatty())
    if is_main_process():
        click.echo(result.model_dump_json(indent=2) if as_json else result.render())


# Plugins -------------------------------------------------------------------


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
        if kind == "broken":
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
    for broken in listing["broken"]:
        click.echo(
            f"broken plugin {broken['name']} ({broken['distribution']}): {broken['error']} "
            f"[during {broken['stage']}; disable with {DISABLE_ENV}={broken['name']}]"
        )


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning input errors into one line and exit code 1."""
    try:
        cli.main(args=argv, prog_name="fslm", standalone_mode=False)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except FslmError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(error.exit_code)
    except ValidationError as error:
        click.echo(f"error: {format_validation_error(error)}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
