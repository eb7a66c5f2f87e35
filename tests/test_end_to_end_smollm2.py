"""End to end on the embedded SmolLM2-135M-Instruct: the README's promises."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_fslm_run_json_prints_a_four_stage_trace_that_answers_paris():
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
    assert "paris" in trace["answer"].lower()


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
