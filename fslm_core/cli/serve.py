"""``fslm serve``: stacks behind an OpenAI-compatible HTTP API, with a page that shows the stages at work."""

from __future__ import annotations

import click

from ..declarations import Stack
from ..errors import InputError
from ..runtime.stack_choice import resolve_stack
from ..runtime.stage_cache import StageCache
from .app import CLI_ARGUMENTS, cli, count_option, seed_option


def served_stacks(names: tuple[str, ...]) -> dict[str, Stack]:
    """Each stack by the name clients ask for it with (the stack's own name); the default stack if none is given."""
    stacks: dict[str, Stack] = {}
    for given in names or (None,):
        stack = resolve_stack(given, arguments=CLI_ARGUMENTS)
        if stack.name in stacks:
            raise InputError(f"--stack {given}: another served stack is already called {stack.name!r}")
        stacks[stack.name] = stack
    return stacks


@cli.command()
@click.option(
    "--stack",
    "stack_names",
    multiple=True,
    help="A ready-made stack's name (see `fslm plugins`), a stack file or a stack folder; repeat to serve several "
    "(default: the default stack). Clients name a stack by its own name as `model`.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@count_option("--max-batch", 64, "Most requests run through the stages together.")
@click.option(
    "--batch-window-ms",
    default=50.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="A batch closes when no request has arrived for this long (at most ten times this after its first).",
)
@click.option("--cache", "use_cache", is_flag=True, help="Reuse what greedy stages wrote before for the same input.")
@click.option(
    "--graceful-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="On SIGINT/SIGTERM, seconds to let requests in flight finish.",
)
@click.option(
    "--max-request-bytes",
    default=2 << 20,
    show_default=True,
    type=click.IntRange(min=1024),
    help="Larger request bodies are answered 413 without being read.",
)
@seed_option
def serve(stack_names, host, port, max_batch, batch_window_ms, use_cache, graceful_timeout, max_request_bytes, seed):
    """Serve stacks over HTTP: /v1/chat/completions, /v1/completions, /v1/models, /health, and a page at /."""
    from ..serving.listen import bind_socket

    sock = bind_socket(host, port)  # a port in use is refused before anything is imported, announced or loaded
    try:
        from ..serving import serve as run_server
    except ImportError as error:
        raise InputError(f"fslm serve needs its extra: pip install 'fslm-core[serve]' ({error})") from None
    stacks = served_stacks(stack_names)
    click.echo(
        f"serving {', '.join(sorted(stacks))} on http://{host}:{port}/ (OpenAI API under /v1; "
        "models load in the background, /health says when they are ready)",
        err=True,
    )
    run_server(
        stacks,
        host=host,
        port=port,
        sock=sock,
        max_batch=max_batch,
        window_s=batch_window_ms / 1000,
        seed=seed,
        cache=StageCache() if use_cache else None,
        graceful_timeout_s=graceful_timeout,
        default_stack=None if stack_names else next(iter(stacks)),
        max_request_bytes=max_request_bytes,
    )
