"""End to end on the embedded SmolLM2-135M-Instruct: the README's promises."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_fslm_run_json_prints_a_four_stage_trace_that_finds_paris():
    result = subprocess.run(
        [sys.executable, "-m", "fslm_core.cli", "run", "--json", "What is the capital of France?"],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 0, result.stderr
    trace = json.loads(result.stdout)
    assert [m["stage"] for m in trace["messages"]] == ["interpret", "recall", "reason", "answer"]
    assert all(m["text"] and m["model"] == "smollm2-135m-instruct" for m in trace["messages"])
    # The untrained stack's stages do not keep to their roles (docs/results.md measures it): Paris is
    # found by a stage, not reliably carried into the answer, so the check is on the trace as a whole.
    assert any("paris" in m["text"].lower() for m in trace["messages"]), trace["messages"]
    assert trace["messages"][-1]["text"] == trace["answer"]


def test_four_adapters_on_one_model_id_stay_within_1_3x_the_memory_of_one_plain_model():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "adapter_memory.py"), "--prompts", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["adapters"]["bases_loaded"] == 1
    assert summary["rss_ratio"] <= 1.3, summary


def long_prompt(characters: int = 50_000) -> str:
    """Numbered notes up to ``characters``, then the question at the end, where a request puts it."""
    question = " Now the question: what is the capital of France?"
    notes, index = [], 0
    while sum(map(len, notes)) < characters - len(question):
        index += 1
        notes.append(f"Note {index}: the shipment of crate {index} left the harbour on day {index % 28 + 1}. ")
    return ("".join(notes) + question)[-characters:]


def test_a_50000_character_prompt_is_cut_to_the_stage_budget_and_answered_in_time(tmp_path, report_measurement):
    from fslm_core import Stack, Stage

    prompt = long_prompt()
    assert len(prompt) == 50_000
    (tmp_path / "prompt.txt").write_text(prompt + "\n")
    stage = Stage(name="answer", model="smollm2-135m-instruct", instruction="Answer the question at the end.")
    Stack(name="one-stage", stages=[stage]).save(tmp_path / "stack.yaml")
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "fslm_core.cli", "run", "--json", "--stack", "stack.yaml"]
        + ["--max-prompt-tokens", "1024", "--input", "prompt.txt"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    trace = json.loads(result.stdout)
    assert trace["prompt"] == prompt and trace["answer"]
    (message,) = trace["messages"]
    assert 1024 - 64 <= message["prompt_tokens"] <= 1024
    (warning,) = result.stderr.strip().splitlines()  # one line from fslm, nothing else
    assert "cut from its start" in warning and "stage_budget_tokens=1024" in warning
    report_measurement(
        f"50,000-character prompt cut to its last {message['prompt_tokens']} tokens (budget 1,024), one stage of "
        f"SmolLM2: answered in {elapsed:.0f} s, model load included ({message['latency_s']:.0f} s in the stage)"
    )
    assert elapsed < 600
