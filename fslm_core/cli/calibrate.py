"""``fslm calibrate``: measure a cascade's accuracy against its deferrals on development documents, pick the
threshold, and write it into the stack file."""

from __future__ import annotations

from pathlib import Path

import click

from .app import batch_size_option, cli, dtype_option


def parse_ranges(items: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """``TASK=START-STOP`` items as task -> [start, stop) document ids."""
    ranges = {}
    for item in items:
        task, _, span = item.partition("=")
        start, _, stop = span.partition("-")
        if not task or not start.isdigit() or not stop.isdigit() or int(stop) <= int(start):
            raise click.BadParameter(
                f"{item!r}: expected TASK=START-STOP, e.g. local_arc_easy=250-500", param_hint="--documents"
            )
        ranges[task] = (int(start), int(stop))
    return ranges


@cli.command("calibrate")
@click.argument("stack_path", metavar="STACK", type=click.Path(exists=True))
@click.option("--tasks", required=True, help="Comma-separated tasks of development documents, all scored alike.")
@click.option(
    "--documents",
    "ranges",
    multiple=True,
    metavar="TASK=START-STOP",
    help="Document ids [START, STOP) of a task (repeatable); a task without is scored on up to 250 documents.",
)
@click.option(
    "--share",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    help="Target: this share of the fallback's accuracy, fewest deferrals.",
)
@click.option("--rate", type=click.FloatRange(0.0, 1.0), help="Target: the best accuracy deferring at most this share.")
@click.option(
    "--output",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the two evaluations (resumable) and the report.",
)
@click.option("--write/--no-write", default=True, show_default=True, help="Write the chosen threshold into STACK.")
@batch_size_option
@dtype_option
def calibrate_command(stack_path, tasks, ranges, share, rate, output, write, batch_size, dtype):
    """Evaluate STACK (a stack file with a `fallback`) without its fallback, and the fallback alone, on the
    same development documents; draw each confidence signal's accuracy-against-deferral curve
    (calibration.svg, calibration.md in --output) and pick the threshold that meets the target."""
    from ..declarations import load_stack, stack_file_path
    from ..experiment.calibration import calibrate
    from ..experiment.calibration_report import write_calibration_report
    from ..files import atomic_write_text
    from ..runtime.cascade import fallback_stack, without_fallback
    from ..stage_settings import GENERATION_SIGNALS
    from ..yaml_edit import set_yaml_value

    if (share is None) == (rate is None):
        raise click.UsageError(
            "give one target: --share (of the fallback's accuracy) or --rate (of documents deferred)"
        )
    document_ranges = parse_ranges(ranges)
    stack = load_stack(stack_path)
    if stack.fallback is None:
        raise click.UsageError(f"{stack_path}: the stack has no fallback to defer to (add `fallback:` to it)")
    task_list = [task.strip() for task in tasks.split(",") if task.strip()]
    result = calibrate(
        without_fallback(stack),
        fallback_stack(stack),
        task_list,
        document_ranges,
        Path(output),
        share=share,
        rate=rate,
        batch_size=batch_size,
        dtype=dtype,
        answer_form=stack.fallback.generation.answer_form if stack.fallback.generation else None,
        echo=click.echo,
    )
    page = write_calibration_report(result, Path(output), f"Calibration of {stack.name}")
    point = result.chosen
    click.echo(
        f"chosen: defer when {result.chosen_signal} < {point.below:.6g}"
        f"{f' or the answer is not a {result.answer_form}' if result.answer_form else ''}: "
        f"{point.deferred} of {len(result.documents)} "
        f"documents deferred, accuracy {point.accuracy:.3f} (stack alone {result.front_accuracy:.3f}, fallback alone "
        f"{result.fallback_accuracy:.3f}); report: {page}"
    )
    if write:
        field = "generation" if result.chosen_signal in GENERATION_SIGNALS else "scoring"
        path = stack_file_path(stack_path)
        # The file is edited in place: its comments (why this fallback, how the threshold was chosen) stay.
        text = set_yaml_value(
            path.read_text(encoding="utf-8"), ("fallback", field), result.deferral.model_dump(exclude_none=True)
        )
        atomic_write_text(path, text)
        click.echo(f"wrote fallback.{field} to {path}")
