"""The ``fslm`` command group, the options its commands share, and the entry point.

Errors caused by input (:class:`~fslm_core.errors.FslmError`) print one line
on stderr and exit 1, without a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import click
from pydantic import ValidationError

from ..declarations import DTYPE_SETTINGS, Stack
from ..errors import FslmError, StackChoiceError, format_validation_error
from ..logs import configure_logging, get_logger
from ..runtime.stack_choice import DEFAULT_DECOMPOSITION, DEFAULT_MODEL, StackArguments, resolve_stack
from .shared_cpu import choose_wait_policy

CLI_ARGUMENTS = StackArguments("--stack", "--decomposition", "--model", "--model-path", "", "--decomposition")
"""How the command line's users write the options that choose a stack, so that errors name what they typed."""


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
    if choose_wait_policy():  # the commands import torch later, in their bodies
        get_logger("fslm.cli").info("openmp_wait_policy", OMP_WAIT_POLICY="PASSIVE", why="machine busy at start")


def chosen_stack(stack_path: str | None, decomposition: str | None, model: str | None, model_path: str | None) -> Stack:
    """The stack a command works on: a stack file, or a decomposition built for a model."""
    if model and not stack_path:
        from ..plugins import get_registry

        get_registry().model(model, field="--model")  # an unknown id is named as the user typed it
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


def count_option(name: str, default: int, help: str | None = None, minimum: int = 1):
    """An integer option with its default shown (batch and chunk sizes, iterations)."""
    return click.option(name, default=default, show_default=True, type=click.IntRange(min=minimum), help=help)


batch_size_option = count_option("--batch-size", 16)
seed_option = click.option("--seed", default=0, show_default=True, type=int)
dtype_option = click.option(
    "--dtype",
    type=click.Choice(DTYPE_SETTINGS),
    help="What the models compute in (default: the stack's own, auto unless its file says): auto is the faster "
    "of float32 and bfloat16 on this machine, timed once (`fslm plugins` shows it; bf16 only on CPUs with native "
    "bf16); int8 is float32 with int8 linear layers (CPU only, faster, slightly less accurate).",
)


class SecondInterruptQuits:
    """While active, a second Ctrl-C ends the process at once, even inside a long torch call.

    The first Ctrl-C stops the command as usual (``KeyboardInterrupt``, with
    the command's own clean-up); Python handles it only between bytecodes, so a
    long computation or clean-up can keep it waiting. Python also writes each
    signal it receives to a "wakeup" file descriptor as it arrives: a thread
    reading it counts the interrupts and quits on the second. Nothing already
    written is lost: fslm's files are written atomically or appended and synced.
    """

    def __enter__(self) -> SecondInterruptQuits:
        self.previous = None
        if threading.current_thread() is not threading.main_thread():
            return self
        read, self.write = os.pipe()
        os.set_blocking(self.write, False)
        self.previous = signal.set_wakeup_fd(self.write, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read,), name="fslm-second-interrupt", daemon=True).start()
        return self

    @staticmethod
    def _watch(read: int) -> None:
        # The kernel may hand a process's SIGINT to any thread that does not block it;
        # one that lands here would not wake the main thread from a blocking call.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        interrupts = 0
        with os.fdopen(read, "rb", buffering=0) as signals:
            while received := signals.read(64):
                interrupts += received.count(signal.SIGINT)
                if interrupts >= 2:
                    sys.stderr.write("interrupted twice: quitting now\n")
                    sys.stderr.flush()
                    os._exit(130)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.set_wakeup_fd(self.previous)
            os.close(self.write)  # the watching thread reads the end of the pipe and stops


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning input errors into one line and exit code 1."""
    with SecondInterruptQuits():
        _run(argv)


def _run(argv: list[str] | None) -> None:
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
