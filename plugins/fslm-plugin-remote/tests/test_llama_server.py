"""The remote backend end to end against a real llama.cpp server: the trained smollm2-paper stack exported
(`fslm export --to llama.cpp`), served by `llama-server` on 127.0.0.1, answering with each stage's adapter.

`scripts/build-llama-server.sh` builds the server once per machine (`make install` runs it); without it
these tests fail rather than skip: they are the remote backend's only test against a real server."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from fslm_plugin_remote.http import RemoteServerError
from fslm_plugin_remote.targets import parse_target

from fslm_core import Stack, Stage
from fslm_core.declarations import load_stack
from fslm_core.errors import ModelLoadError
from fslm_core.runtime import ModelPool, run_stack
from fslm_core.runtime.listener import RunListener

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]
QUESTION = "What is the capital of France?"


def llama_server() -> str:
    built = subprocess.run([str(ROOT / "scripts" / "build-llama-server.sh")], capture_output=True, text=True)
    assert built.returncode == 0, f"llama-server is not built and did not build: {built.stderr[-2000:]}"
    return built.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(command: list[str], url: str) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"llama-server exited: {process.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError("llama-server did not become ready in 120 s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """smollm2-paper exported and served: (folder, url, the fslm export output)."""
    from fslm_core.cli import main

    folder = tmp_path_factory.mktemp("exported")
    port = free_port()
    binary = llama_server()
    arguments = [
        "export",
        "smollm2-paper",
        "--to",
        "llama.cpp",
        str(folder),
        "--option",
        f"port={port}",
        "--option",
        "slots=64",
        "--option",
        "slot_tokens=768",
        "--option",
        f"server={binary}",
    ]
    try:
        main(arguments)
    except SystemExit as exit_:
        assert not exit_.code, f"fslm export failed ({exit_.code})"
    command = (folder / "serve.sh").read_text().splitlines()[-1].removeprefix("exec ")
    url = f"http://127.0.0.1:{port}"
    process = start(shlex.split(command), url)
    yield folder, url
    stop(process)


def completion(url: str, token_ids: list[int], adapter: int, adapters: int, tokens: int) -> str:
    body = {
        "prompt": token_ids,
        "n_predict": tokens,
        "temperature": 0.0,
        "cache_prompt": False,
        "lora": [{"id": i, "scale": 1.0 if i == adapter else 0.0} for i in range(adapters)],
    }
    request = urllib.request.Request(
        url + "/completion", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())["content"]


def test_the_exported_stack_answers_through_the_server_with_each_stages_adapter(exported):
    folder, url = exported
    stack = load_stack(folder / "stack.yaml")
    assert [parse_target(stage.model).adapter for stage in stack.stages] == ["interpret", "recall", "reason", "answer"]
    assert sorted(path.name for path in (folder / "adapters").iterdir()) == [
        "answer.gguf",
        "interpret.gguf",
        "reason.gguf",
        "recall.gguf",
    ]
    pool = ModelPool()
    (trace,) = run_stack(stack, [QUESTION], pool=pool)
    assert [message.stage for message in trace.messages] == ["interpret", "recall", "reason", "answer"]
    assert all(message.text and message.model.startswith("remote:llama.cpp?") for message in trace.messages)
    assert [message.adapter for message in trace.messages] == ["interpret", "recall", "reason", "answer"]
    assert trace.messages[1].text.startswith("- ")  # recall's adapter writes a list; the others do not
    assert not any(message.text.startswith("- ") for message in trace.messages[::2])
    # Each stage's message is what the server writes for that stage's prompt and adapter, asked one by one.
    from fslm_core.runtime import bind_stack, render_stage_prompt

    bound = bind_stack(stack, pool=pool)
    partial = trace.model_copy(update={"messages": []})
    for index, (stage, message) in enumerate(zip(stack.stages, trace.messages)):
        backend = bound.stages[stage.name].backend
        ids = backend.encode(render_stage_prompt(bound, stage, partial))
        assert message.prompt_tokens == len(ids)
        alone = completion(url, ids, index, 4, stage.generation.max_new_tokens)
        assert message.text == alone.strip(), stage.name
        partial.messages.append(message)


def test_fslm_run_on_the_exported_stack_prints_each_stage(exported, capsys):
    from fslm_core.cli import main

    folder, _ = exported
    try:
        main(["run", "--stack", str(folder / "stack.yaml"), QUESTION])
    except SystemExit as exit_:
        assert not exit_.code
    out = capsys.readouterr().out
    for number, stage in enumerate(["interpret", "recall", "reason", "answer"], start=1):
        header = next(line for line in out.splitlines() if line.startswith(f"[{number}] {stage}  ("))
        assert header.startswith(f"[{number}] {stage}  (remote:llama.cpp?url=") and ", adapter, " in header
    assert "answer: " in out


def test_sixty_four_concurrent_rows_finish(exported):
    folder, _ = exported
    first = load_stack(folder / "stack.yaml").stages[0]
    stage = first.model_copy(update={"generation": first.generation.model_copy(update={"max_new_tokens": 8})})
    prompts = [f"What is {n} plus {n}?" for n in range(64)]
    traces = run_stack(Stack(name="one", stages=[stage]), prompts, pool=ModelPool(), batch_size=64)
    assert len(traces) == 64 and all(trace.answer for trace in traces)
    assert {trace.messages[0].batch_size for trace in traces} == {64}


def test_an_unknown_adapter_is_refused_before_any_request(exported):
    _, url = exported
    model = f"remote:llama.cpp?url={url}&base=smollm2-135m-instruct&adapter=summarise"
    stack = Stack(name="wrong", stages=[Stage(name="a", model=model, instruction="Answer.")])
    with pytest.raises(ModelLoadError, match="adapter 'summarise' is not loaded \\(loaded: 0 \\(interpret\\)"):
        run_stack(stack, [QUESTION], pool=ModelPool())


def test_a_server_that_dies_mid_run_stops_it_with_the_server_named(exported, tmp_path):
    folder, _ = exported
    port = free_port()
    command = shlex.split((folder / "serve.sh").read_text().splitlines()[-1].removeprefix("exec "))
    command[command.index("--port") + 1] = str(port)
    url = f"http://127.0.0.1:{port}"
    process = start(command, url)
    stack = load_stack(folder / "stack.yaml")
    stages = [
        stage.model_copy(update={"model": stage.model.replace(f":{_port(stage.model)}", f":{port}")})
        for stage in stack.stages
    ]
    stack = stack.model_copy(update={"stages": tuple(stages)})

    class KillAfterFirstStage(RunListener):
        def on_message(self, index, message):
            if message.stage == "interpret":
                stop(process)

    try:
        with pytest.raises(RemoteServerError, match=f"llama.cpp server {url}, adapter 'recall': POST .*no answer"):
            run_stack(stack, [QUESTION], pool=ModelPool(), listener=KillAfterFirstStage())
    finally:
        stop(process)


def _port(model_id: str) -> str:
    return parse_target(model_id).url.rsplit(":", 1)[1]


def test_the_server_command_serves_every_adapter_unapplied(exported):
    folder, _ = exported
    command = (folder / "serve.sh").read_text()
    assert "--lora-init-without-apply" in command and "SmolLM2-135M-Instruct.Q4_1.gguf" in command
    assert os.access(folder / "serve.sh", os.X_OK)


def test_exporting_again_converts_only_the_adapters_that_changed(exported, tmp_path):
    import shutil

    from fslm_plugin_smollm2_paper import STACK_FOLDER
    from safetensors.torch import load_file, save_file

    from fslm_core.cli import main

    folder, _ = exported
    again = tmp_path / "again"
    shutil.copytree(folder, again)  # copies keep their modification times
    stack = tmp_path / "stack"
    shutil.copytree(STACK_FOLDER, stack)
    weights = stack / "adapters" / "recall" / "adapter_model.safetensors"
    save_file({name: tensor * 2 for name, tensor in load_file(weights).items()}, weights, metadata={"format": "pt"})
    before = {path.name: path.stat().st_mtime_ns for path in (again / "adapters").iterdir()}
    try:
        main(["export", str(stack), "--to", "llama.cpp", str(again)])
    except SystemExit as exit_:
        assert not exit_.code, f"fslm export failed ({exit_.code})"
    after = {path.name: path.stat().st_mtime_ns for path in (again / "adapters").iterdir()}
    assert [name for name in sorted(before) if after[name] != before[name]] == ["recall.gguf"]
    sources = json.loads((again / "adapter_sources.json").read_text())
    assert sources["recall"] != json.loads((folder / "adapter_sources.json").read_text())["recall"]
