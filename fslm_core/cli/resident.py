"""``fslm run`` through a running ``fslm serve``: the models stay loaded there, so an answer starts at once.

A command-line run pays for importing torch and loading the models every time
(about 13 s before the first stage writes on a 2-core machine). When ``fslm
serve`` is running with the stack the command names, ``fslm run`` sends the
prompts there instead and prints each stage's message as the server streams
it (fslm's ``fslm_stage`` chunks), then the answer: the same trace, from the
same stack. Only the standard library is used here, so this path imports no
torch. It is taken when

* ``--server URL`` is given, or ``$FSLM_SERVER`` names one, or a server answers
  on the default address (``http://127.0.0.1:8000``) within a fraction of a second;
* the server serves the stack ``--stack`` names, or, with no stack option, its installation's default
  (``fslm serve`` without ``--stack``); no plugin is loaded to decide, as their registry imports torch;
* no option asks for something only a local run does (``--dtype``, ``--cache``,
  ``--max-prompt-tokens``, ``--no-enforce-formats``, ``--stats``).

``--local`` runs in the process whatever is running. The command says on
stderr which server answered.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

SERVER_ENV = "FSLM_SERVER"
DEFAULT_SERVER = "http://127.0.0.1:8000"
PROBE_TIMEOUT_S = 0.3
DEFAULT_STACK = ""  # asks the server for its default stack (plugins are not loaded here: that imports torch)


def server_url(given: str | None) -> tuple[str | None, bool]:
    """The server to try and whether the user named it (then it must answer); None when there is none to try."""
    if given:
        return given.rstrip("/"), True
    configured = os.environ.get(SERVER_ENV, "").strip()
    if configured:
        return configured.rstrip("/"), True
    return DEFAULT_SERVER, False


def served_stacks(url: str, timeout: float) -> tuple[list[str], str | None] | None:
    """The stacks an fslm server at ``url`` serves and which of them is its installation's default, when it is
    ready; None when nothing (or not fslm) answers."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            body = json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("status") != "ok" or not isinstance(body.get("stacks"), list):
        return None
    default = body.get("default")
    return [str(name) for name in body["stacks"]], str(default) if default else None


def stream_trace(url: str, stack: str, prompt: str, on_message: Callable[[dict], None]) -> dict:
    """Ask the server for one prompt's answer; ``on_message`` hears each stage's message; returns the trace."""
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(
            {"model": stack, "messages": [{"role": "user", "content": prompt}], "stream": True, "fslm_trace": True}
        ).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    trace = None
    with urllib.request.urlopen(request, timeout=600) as response:
        for event in _events(response):
            if "fslm_stage" in event:
                on_message(event["fslm_stage"])
            if "fslm_trace" in event:
                trace = event["fslm_trace"]
            if "error" in event:
                raise OSError(event["error"].get("message", "the server reported an error"))
    if trace is None:
        raise OSError("the server's stream ended without the trace")
    return trace


def _events(response) -> Iterator[dict]:
    for raw in response:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


def try_server(given: str | None, stack_name: str | None) -> tuple[str, str] | None:
    """The server URL to answer through and the stack to ask it for, or None to run locally.

    ``stack_name`` is :data:`DEFAULT_STACK` for the default stack: the server's, when it serves its
    installation's default. A server the user named must serve the stack.
    """
    from ..errors import InputError

    url, named = server_url(given)
    if url is None or stack_name is None:
        return None
    found = served_stacks(url, timeout=5 if named else PROBE_TIMEOUT_S)
    if found is None:
        if named:
            raise InputError(f"--server: no fslm server is ready at {url} (start one with `fslm serve`)")
        return None
    stacks, default = found
    if stack_name == DEFAULT_STACK:
        if default is None and named:
            raise InputError(
                f"--server: {url} serves {', '.join(stacks)}, not the default stack; name one with --stack"
            )
        return (url, default) if default is not None else None
    if stack_name not in stacks:
        if named:
            raise InputError(f"--server: {url} does not serve {stack_name!r} (it serves {', '.join(stacks)})")
        return None
    return url, stack_name
