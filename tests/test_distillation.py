"""Teacher distillation on the tiny random model: targets per stage, resumption, bad input, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fslm_cli import run_fslm

from fslm_core import distill, load_distilled
from fslm_core.distillation import (
    REFERENCE,
    TEACHER,
    DistillConfig,
    read_instruction_data,
    shard_folders,
    targets_trace,
)
from fslm_core.errors import FslmError, InputError, UnknownNameError
from fslm_core.plugins import get_registry
from fslm_core.runtime import stage_input

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALPACA_TINY = Path(__file__).parent / "fixtures" / "alpaca_tiny.json"
FAST = DistillConfig(max_new_tokens=6, shard_size=2, batch_size=4)


@pytest.fixture(scope="module")
def distilled_and_summary(tiny_model_id, tmp_path_factory):
    folder = tmp_path_factory.mktemp("distilled") / "out"
    summary = distill(ALPACA_TINY, folder, FAST, teacher=tiny_model_id, progress=False)
    return folder, summary


def test_fixture_rows_are_read_and_malformed_ones_counted():
    data = read_instruction_data(ALPACA_TINY)
    assert data.rows == 8
    assert [example.example_id for example in data.examples] == [0, 1, 2, 4, 5, 7]
    assert dict(data.skipped) == {"missing output": 1, "instruction is not text": 1}
    assert data.examples[0].prompt == "Arrange the following musical notes\n\nG, B, E"
    assert data.examples[2].prompt == "Name a major American city"


def test_distillation_writes_one_target_per_stage_per_example(distilled_and_summary):
    folder, summary = distilled_and_summary
    assert summary.rows_read == 8 and summary.usable_examples == 6
    assert summary.skipped == {"missing output": 1, "instruction is not text": 1}
    assert summary.examples_distilled == summary.examples_total == 6
    assert summary.shards == 3 and len(shard_folders(folder)) == 3

    data = load_distilled(folder)
    stages = ["interpret", "recall", "reason", "answer"]
    assert data.stage_names == stages and data.decomposition == "fslm-paper"
    assert len(data.dataset) == 6 * 4
    examples = data.examples()
    assert [example.example_id for example in examples] == [0, 1, 2, 4, 5, 7]
    reference = {example.example_id: example.output for example in read_instruction_data(ALPACA_TINY).examples}
    for example in examples:
        assert list(example.targets) == stages
        assert example.targets["answer"] == reference[example.example_id]
    sources = {(row["stage"], row["target_source"]) for row in data.dataset}
    assert sources == {("interpret", TEACHER), ("recall", TEACHER), ("reason", TEACHER), ("answer", REFERENCE)}


def test_notes_teacher_writes_every_intermediate_target_from_one_reply(distilled_and_summary):
    """One answer-aware reply per example: the stages' targets are its sections, and the reply is kept."""
    notes = get_registry().decomposition("fslm-paper").teacher_notes
    data = load_distilled(distilled_and_summary[0])
    assert data.manifest["identity"]["teacher_notes"]["reply_start"] == notes.reply_start
    rows = data.dataset.to_list()
    for example in data.examples():
        replies = {
            row["teacher_reply"] for row in rows if row["example_id"] == example.example_id and row["stage"] != "answer"
        }
        assert len(replies) == 1  # one call wrote all three
        reply = replies.pop()
        assert reply.startswith(notes.reply_start)
        parsed = notes.parse(reply)
        for stage in ("interpret", "recall", "reason"):
            assert example.targets[stage] == parsed.get(stage, "")
        # The random teacher rarely writes the later labels, but it always continues the forced restatement.
        assert example.targets["interpret"].startswith("The task asks")


def test_per_stage_teacher_is_one_call_per_stage(tiny_model_id, tmp_path):
    distill(
        ALPACA_TINY, tmp_path / "out", FAST, teacher=tiny_model_id, teacher_prompt="per-stage", limit=2, progress=False
    )
    data = load_distilled(tmp_path / "out")
    assert data.manifest["identity"]["teacher_notes"] is None
    for row in data.dataset:
        if row["target_source"] == TEACHER:
            assert row["teacher_reply"] == row["target"]
    with pytest.raises(InputError, match="different 'teacher_notes'; choose another"):
        distill(ALPACA_TINY, tmp_path / "out", FAST, teacher=tiny_model_id, progress=False)  # notes now: other run


def test_recorded_stage_inputs_are_what_the_engine_builds_from_the_targets(distilled_and_summary, tiny_model_id):
    data = load_distilled(distilled_and_summary[0])
    registry = get_registry()
    stack = registry.decomposition("fslm-paper").build(tiny_model_id)
    formats = {stage.name: registry.format(stage.format) for stage in stack.stages}
    for example in data.examples():
        for stage in stack.stages:
            upstream = {name: example.targets[name] for name in stage.reads}
            trace = targets_trace(stack.name, example.prompt, upstream, formats, tiny_model_id)
            assert example.stage_inputs[stage.name] == stage_input(stage, trace, formats)
        assert example.stage_inputs["answer"].startswith(f"User request:\n{example.prompt}\n\nWhat is asked:\n")


def test_interrupted_distillation_resumes_without_redoing_or_losing_work(
    distilled_and_summary, tiny_model_id, tmp_path
):
    class Stop(Exception):
        pass

    def stop_after_first_shard(shard):
        raise Stop

    folder = tmp_path / "out"
    with pytest.raises(Stop):
        distill(ALPACA_TINY, folder, FAST, teacher=tiny_model_id, progress=False, on_shard=stop_after_first_shard)
    first = shard_folders(folder)
    assert [shard.name for shard in first] == ["shard-00000"]
    written = {file.name: file.stat().st_mtime_ns for file in first[0].iterdir()}
    (folder / ".tmp-shard-00001").mkdir()  # what a kill in the middle of a shard leaves behind

    summary = distill(ALPACA_TINY, folder, FAST, teacher=tiny_model_id, progress=False)
    assert (summary.examples_before, summary.examples_distilled, summary.examples_total) == (2, 4, 6)
    assert {file.name: file.stat().st_mtime_ns for file in first[0].iterdir()} == written
    assert not (folder / ".tmp-shard-00001").exists()

    def rows(path):
        return sorted(json.dumps(row, sort_keys=True) for row in load_distilled(path).dataset)

    assert rows(folder) == rows(distilled_and_summary[0])  # same targets as the uninterrupted run, each once
    again = distill(ALPACA_TINY, folder, FAST, teacher=tiny_model_id, progress=False)
    assert again.examples_distilled == 0 and again.examples_total == 6


def test_a_larger_limit_extends_a_distillation(tiny_model_id, tmp_path):
    folder = tmp_path / "out"
    assert distill(ALPACA_TINY, folder, FAST, teacher=tiny_model_id, limit=3, progress=False).examples_total == 3
    summary = distill(ALPACA_TINY, folder, FAST, teacher=tiny_model_id, progress=False)
    assert (summary.examples_before, summary.examples_distilled) == (3, 3)
    assert sorted(set(load_distilled(folder).dataset["example_id"])) == [0, 1, 2, 4, 5, 7]


def test_jsonl_lines_that_are_not_json_are_counted(tmp_path):
    file = tmp_path / "data.jsonl"
    file.write_text('{"instruction": "Say hi.", "output": "Hi."}\nnot json\n\n{"instruction": "", "output": "x"}\n')
    data = read_instruction_data(file)
    assert len(data.examples) == 1 and data.examples[0].input == ""
    assert dict(data.skipped) == {"line is not JSON": 1, "empty instruction": 1}


def test_bad_input_gives_one_clear_error(tiny_model_id, tmp_path, distilled_and_summary):
    with pytest.raises(InputError, match="file not found: .*missing.json"):
        distill(tmp_path / "missing.json", tmp_path / "a", FAST, teacher=tiny_model_id)
    with pytest.raises(UnknownNameError, match="teacher: unknown model id 'no-such-teacher'; known: .*smollm2"):
        distill(ALPACA_TINY, tmp_path / "b", FAST, teacher="no-such-teacher")
    with pytest.raises(UnknownNameError, match="decomposition: unknown decomposition 'nope'"):
        distill(ALPACA_TINY, tmp_path / "c", FAST, teacher=tiny_model_id, decomposition="nope")
    bad_rows = tmp_path / "bad.json"
    bad_rows.write_text(json.dumps([{"instruction": "x"}, ["not", "a", "row"]]))
    with pytest.raises(InputError, match="no usable rows .*1 missing output.*1 row is not an object"):
        distill(bad_rows, tmp_path / "d", FAST, teacher=tiny_model_id)
    not_json = tmp_path / "broken.json"
    not_json.write_text("[{")
    with pytest.raises(InputError, match="not valid JSON"):
        distill(not_json, tmp_path / "e", FAST, teacher=tiny_model_id)
    with pytest.raises(InputError, match="different 'max_new_tokens'"):
        distill(ALPACA_TINY, distilled_and_summary[0], FAST, teacher=tiny_model_id, max_new_tokens=7)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty and holds no manifest.json"):
        distill(ALPACA_TINY, occupied, FAST, teacher=tiny_model_id)
    with pytest.raises(InputError, match="distillation settings: shard_size"):
        distill(ALPACA_TINY, tmp_path / "f", FAST, teacher=tiny_model_id, shard_size=0)
    with pytest.raises(InputError, match="has no manifest.json"):
        load_distilled(occupied)
    assert issubclass(InputError, FslmError)


def test_cli_distills_and_reports_skipped_rows(tiny_model_id, tmp_path, capsys):
    code, out, err = run_fslm(
        capsys,
        "distill",
        "--data",
        str(ALPACA_TINY),
        "--output",
        str(tmp_path / "out"),
        "--teacher",
        tiny_model_id,
        "--max-new-tokens",
        "4",
        "--limit",
        "2",
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["examples_total"] == 2 and summary["skipped"] == {"missing output": 1, "instruction is not text": 1}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{tmp}/missing.json"], "error: data: file not found"),
        (
            ["--data", str(ALPACA_TINY), "--teacher", "no-such-teacher"],
            "error: teacher: unknown model id 'no-such-teacher'",
        ),
    ],
)
def test_cli_bad_input_is_one_line_without_traceback(args, message, tmp_path, capsys):
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    code, out, err = run_fslm(capsys, "distill", *args, "--output", str(tmp_path / "out"))
    assert code == 1
    assert err.startswith(message) and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_killed_distill_process_resumes_to_the_uninterrupted_result(tiny_model_id, tmp_path):
    """SIGKILL, not an exception: the process gets no chance to clean up."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from fslm_core.testing import TINY_INSTRUCTIONS

    rows = [dict(row, instruction=f"{row['instruction']} ({n})") for n in range(16) for row in TINY_INSTRUCTIONS]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    folder = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "fslm_core.cli",
        "distill",
        "--data",
        str(data),
        "--output",
        str(folder),
        "--teacher",
        tiny_model_id,
        "--max-new-tokens",
        "6",
        "--batch-size",
        "4",
        "--shard-size",
        "2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(shard_folders(folder)) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    before = {shard.name: {f.name: f.stat().st_mtime_ns for f in shard.iterdir()} for shard in shard_folders(folder)}
    assert 2 <= len(before) < len(rows) // 2

    resumed = subprocess.run(command + ["--json"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    assert summary["examples_before"] == 2 * len(before)
    assert summary["examples_total"] == len(rows)
    for name, files in before.items():  # finished shards are kept as they were, not redone
        assert {f.name: f.stat().st_mtime_ns for f in (folder / name).iterdir()} == files
    assert not [path for path in folder.iterdir() if path.name.startswith(".tmp-")]

    reference = tmp_path / "reference"
    distill(
        data,
        reference,
        DistillConfig(max_new_tokens=6, batch_size=4, shard_size=2),
        teacher=tiny_model_id,
        progress=False,
    )

    def targets(path):
        return sorted(json.dumps(row, sort_keys=True) for row in load_distilled(path).dataset)

    assert targets(folder) == targets(reference)
