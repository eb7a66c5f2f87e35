"""Thirteen rough edges of the command line: each ends in one line naming the culprit, exit 1 or 2, no
traceback, and nothing written or overwritten; a failing output location costs no model load."""

from __future__ import annotations

import socket
import time

import pytest
from test_cli_errors import run_cli


def assert_one_line(result, code: int, *fragments: str) -> str:
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_new_stack_leaves_an_existing_file_byte_for_byte_unchanged_without_force(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_bytes(b"name: mine\n# my edits\n")
    assert_one_line(run_cli("new-stack", str(mine)), 1, "mine.yaml exists", "--force")
    assert mine.read_bytes() == b"name: mine\n# my edits\n"
    result = run_cli("new-stack", str(mine), "--force")
    assert result.returncode == 0 and b"my edits" not in mine.read_bytes()


def test_new_stack_refuses_an_existing_stack_folder_without_force(tmp_path):
    folder = tmp_path / "base"
    assert run_cli("new-stack", str(folder)).returncode == 0
    (folder / "stack.yaml").write_text("name: edited\n")
    assert_one_line(run_cli("new-stack", str(folder)), 1, "stack.yaml exists")
    assert (folder / "stack.yaml").read_text() == "name: edited\n"


@pytest.mark.parametrize(
    ("output", "fragment"),
    [
        ("/proc/fslm-no-such-folder/traces.jsonl", "--output: cannot write /proc/fslm-no-such-folder/traces.jsonl"),
        ("/sys/traces.jsonl", "--output: cannot write /sys/traces.jsonl"),
        ("FILE/traces.jsonl", "is a file, not a folder"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_within_a_second_before_any_model_loads(tmp_path, output, fragment):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    output = output.replace("FILE", str(a_file))
    started = time.perf_counter()
    line = assert_one_line(run_cli("run", "--output", output, "What is 2 + 2?"), 1, fragment)
    assert time.perf_counter() - started < 10  # the interpreter and fslm's imports; a model load takes more
    assert "loaded" not in line
    assert a_file.read_text() == "x"


def test_input_files_that_are_not_text_or_are_empty_are_named(tmp_path):
    binary = tmp_path / "random-bytes.bin"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    assert_one_line(run_cli("run", "--input", str(binary)), 1, f"--input: {binary} is not UTF-8 text")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert_one_line(run_cli("run", "--input", str(empty)), 1, f"--input: {empty} is empty")


def test_resume_without_output_is_refused():
    assert_one_line(run_cli("run", "--resume", "hi"), 2, "--resume continues an --output file")


def test_an_unknown_model_names_the_option_typed():
    assert_one_line(run_cli("run", "--model", "gpt-17", "hi"), 1, "--model: unknown model id 'gpt-17'")


def test_an_unknown_model_in_a_stack_file_names_the_file(tmp_path):
    stack = tmp_path / "stack.yaml"
    stack.write_text("name: s\nstages:\n- name: a\n  model: gpt-17\n  instruction: x\n")
    assert_one_line(run_cli("run", "--stack", str(stack), "hi"), 1, f"{stack}: stages.0.model: unknown model id")


def test_an_unknown_field_says_what_was_meant(tmp_path):
    stack = tmp_path / "stack.yaml"
    stack.write_text("name: s\nstages:\n- name: a\n  model: smollm2-135m-instruct\n  instruction: x\n  raeds: []\n")
    assert_one_line(
        run_cli("run", "--stack", str(stack), "hi"), 1, "stages.0.raeds: unknown field; did you mean 'reads'?"
    )


@pytest.mark.parametrize("limit", ["-1", "0"])
def test_eval_limit_must_be_above_zero(limit):
    assert_one_line(run_cli("eval", "--tasks", "local_arc_easy", "--limit", limit), 2, "--limit", "1 or more")


def test_a_data_file_of_the_wrong_shape_names_the_missing_fields_and_leaves_no_cache(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"q": "Why?", "a": "Because."}\n')
    cache = tmp_path / "datasets-cache"
    result = run_cli(
        "eval",
        "--tasks",
        "local_arc_easy",
        "--data-file",
        f"local_arc_easy={rows}",
        "--limit",
        "2",
        env={"HF_DATASETS_CACHE": str(cache)},
    )
    assert_one_line(result, 1, f"the rows of {rows} lack the field(s) answerKey, id, question (they have: a, q)")
    assert not cache.exists() or not any(cache.rglob("*.lock"))


def test_a_missing_data_file_is_named_without_advising_the_option_just_used(tmp_path):
    missing = tmp_path / "nope.jsonl"
    line = assert_one_line(
        run_cli("eval", "--tasks", "local_arc_easy", "--data-file", f"local_arc_easy={missing}", "--limit", "2"),
        1,
        f"given data file not found: {missing}",
    )
    assert "--data-file" not in line


def test_serve_on_a_port_in_use_says_so_before_announcing_or_loading():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        started = time.perf_counter()
        result = run_cli("serve", "--port", str(port))
    line = assert_one_line(result, 1, f"cannot listen on 127.0.0.1:{port}", "choose another --port")
    assert "serving" not in result.stderr and "serving" not in line
    assert time.perf_counter() - started < 10
