"""``fslm run`` and ``fslm new-stack``: run a stack on prompts, or write one to edit."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..declarations import STACK_FILE_NAME, Stack, with_dtype
from ..errors import InputError
from ..files import check_writable_file
from ..runtime.costs import render_costs, stage_costs
from ..runtime.stage_cache import StageCache
from .app import batch_size_option, chosen_stack, cli, count_option, dtype_option, seed_option, stack_options
from .resident import DEFAULT_STACK, stream_trace, try_server


def read_prompts(prompts: tuple[str, ...], input_file: str | None) -> list[str]:
    collected = list(prompts)
    if input_file:
        path = Path(input_file)
        if not path.is_file():
            raise InputError(f"--input: file not found: {path}")
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise InputError(f"--input: {path} is not UTF-8 text; give a text file with one prompt per line") from None
        if not lines and not collected:
            raise InputError(f"--input: {path} is empty; give a text file with one prompt per line")
        collected += lines
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
@click.option(
    "--max-prompt-tokens",
    type=click.IntRange(min=1),
    help="Most tokens each stage reads; a longer prompt is cut from its start, its end kept "
    "(default: each stage's own setting, else its model's context).",
)
@click.option(
    "--cache",
    "use_cache",
    is_flag=True,
    help="Reuse what greedy stages wrote before for the same input (fslm's stage cache; `fslm cache info`).",
)
@click.option("--stats", is_flag=True, help="Print a per-stage cost table (tokens, time, parameters, FLOPs) on stderr.")
@click.option(
    "--enforce-formats/--no-enforce-formats",
    default=True,
    help="Hold structured stages (list, key-value, json) to their format while decoding (default), or only ask "
    "for it in the instruction, to measure what enforcing gives.",
)
@click.option(
    "--server",
    help="Answer through this running `fslm serve` (default: $FSLM_SERVER, else one on 127.0.0.1:8000 if it serves "
    "the stack), where the models stay loaded.",
)
@click.option("--local", is_flag=True, help="Run in this process even when an `fslm serve` could answer.")
@batch_size_option
@count_option("--chunk-size", 256, "Prompts per engine run; --output is written after each chunk.")
@seed_option
@dtype_option
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
    max_prompt_tokens,
    use_cache,
    stats,
    enforce_formats,
    server,
    local,
    batch_size,
    chunk_size,
    seed,
    dtype,
):
    """Run a stack on PROMPTS and print each answer with its per-stage trace."""
    # Everything a user typed is checked before any model loads: a mistake costs a second, not a run.
    if resume and not output_file:
        raise click.UsageError("--resume continues an --output file; give --output FILE")
    collected = read_prompts(prompts, input_file)
    output = Path(output_file) if output_file else None
    if output is not None:
        check_writable_file(output, "--output")
    done = count_lines(output) if output and resume else 0
    if output and output.exists() and not resume and output.stat().st_size > 0:
        raise InputError(
            f"--output: {output} already holds traces; pass --resume to continue it or choose another file"
        )
    local_only = dtype or use_cache or max_prompt_tokens or stats or not enforce_formats
    if server and (local or local_only):
        raise click.UsageError(
            "--server answers with the server's settings; leave out --local, --dtype, --cache, "
            "--max-prompt-tokens, --no-enforce-formats and --stats"
        )
    if not local and not local_only:
        answering = try_server(server, served_stack_name(stack_path, decomposition, model, model_path))
        if answering is not None:
            url, name = answering
            run_on_server(url, name, collected[done:], output, as_json, answers_only)
            return
    stack = with_dtype(chosen_stack(stack_path, decomposition, model, model_path), dtype, field="--dtype")
    if max_prompt_tokens is not None:
        stack = with_prompt_budget(stack, max_prompt_tokens)
    if done >= len(collected):
        click.echo(f"all {len(collected)} prompts already have traces in {output}", err=True)
        return
    show_progress = sys.stderr.isatty()
    cache = StageCache() if use_cache else None
    finished: list = []
    for start in range(done, len(collected), chunk_size):
        traces = stack.run(
            collected[start : start + chunk_size],
            batch_size=batch_size,
            seed=seed,
            progress=show_progress,
            cache=cache,
            enforce_formats=enforce_formats,
        )
        if stats:
            finished += traces
        if output:
            append_jsonl(output, [trace.to_json() for trace in traces])
        for trace in traces:
            if as_json:
                click.echo(trace.to_json())
            elif answers_only:
                click.echo(trace.answer)
            else:
                click.echo(trace.render() + "\n")
    if stats:
        click.echo(render_costs(stage_costs(stack, finished)), err=True)


def served_stack_name(stack_path, decomposition, model, model_path) -> str | None:
    """What to ask a server for: the stack ``--stack`` names (a name, not a file or folder here), or
    :data:`DEFAULT_STACK` when no stack option is given; None when only a local run can build the stack.

    Plugins are not loaded to decide (their registry imports torch, the cost a resident server saves); a name
    the server does not serve runs locally, where an unknown one is an error.
    """
    if decomposition or model or model_path:
        return None
    if stack_path:
        return None if Path(stack_path).expanduser().exists() else stack_path
    return DEFAULT_STACK


def run_on_server(url: str, stack: str, prompts: list[str], output: Path | None, as_json: bool, answers_only: bool):
    """Each prompt through the server, its stages printed as they arrive; traces appended to ``output``."""
    from ..messages import Message, Trace

    click.echo(
        f"answering through fslm serve at {url} ({stack}; its models are loaded there; --local runs here)", err=True
    )
    text = not (as_json or answers_only)
    for prompt in prompts:
        if text:
            click.echo(f"prompt: {prompt}")
        printed: list[dict] = []

        def on_message(message: dict, printed: list[dict] = printed) -> None:
            printed.append(message)
            if text:
                click.echo(Message.model_validate(message).render(len(printed)))

        try:
            trace = Trace.model_validate(stream_trace(url, stack, prompt, on_message))
        except OSError as error:
            raise InputError(f"--server: {url} failed while answering ({error}); rerun with --local") from None
        if output:
            append_jsonl(output, [trace.to_json()])
        if as_json:
            click.echo(trace.to_json())
        elif answers_only:
            click.echo(trace.answer)
        else:
            click.echo(trace.render_ending() + "\n")


def with_prompt_budget(stack: Stack, max_prompt_tokens: int) -> Stack:
    """``stack`` with every stage reading at most ``max_prompt_tokens`` tokens."""
    stages = [
        stage.model_copy(
            update={"generation": stage.generation.model_copy(update={"max_prompt_tokens": max_prompt_tokens})}
        )
        for stage in stack.stages
    ]
    return stack.model_copy(update={"stages": tuple(stages)})


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
@click.option("--force", is_flag=True, help="Replace an existing stack file (or a folder's stack.yaml).")
def new_stack(destination, stack_path, decomposition, model, model_path, force):
    """Write a stack file (DESTINATION.yaml) or folder built from a decomposition, to edit by hand."""
    target = Path(destination).expanduser()
    written = target if target.suffix in (".yaml", ".yml") else target / STACK_FILE_NAME
    if not force and (written.exists() or (target.exists() and not target.is_dir())):
        raise InputError(
            f"{destination}: {written if written.exists() else target} exists; it may hold your edits. "
            "Choose another name, or pass --force to replace it"
        )
    stack = chosen_stack(stack_path, decomposition, model, model_path)
    click.echo(stack.save(destination))
