"""`fslm eval` and `python -m fslm_core.lmeval`: side-by-side runs, output files, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fslm_cli import run_fslm
from fslm_plugin_benchmarks import DATA_DIR_ENV, FIXTURES_DIR
from tiny_stacks import two_stage_stack

from fslm_core.declarations import Stack, Stage
from fslm_core.errors import UnknownNameError
from fslm_core.lmeval import BenchmarkTaskManager, comparison_table, metric_rows, render_table


@pytest.fixture(scope="module")
def two_stage_stack_folder(tiny_model_id, tiny_adapters, tmp_path_factory):
    """A two-stage stack on the tiny model, saved as a stack folder."""
    stack = two_stage_stack(tiny_model_id, tiny_adapters)
    return stack.save(tmp_path_factory.mktemp("stack") / "tiny-two")


def test_eval_prints_stack_and_baseline_side_by_side_and_writes_json(
    capsys, benchmark_fixture_data, two_stage_stack_folder, tiny_model_id, tmp_path
):
    output = tmp_path / "report"
    code, out, err = run_fslm(
        capsys,
        "eval",
        "--stack",
        str(two_stage_stack_folder),
        "--tasks",
        "local_arc_easy,local_winogrande",
        "--num-fewshot",
        "0",
        "--limit",
        "2",
        "--baseline",
        tiny_model_id,
        "--output",
        str(output),
        "--log-samples",
        "--bootstrap-iters",
        "100",
    )
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("task"))
    assert header.split() == [
        "task",
        "metric",
        "stack",
        "stderr",
        "baseline",
        "stderr",
        "stack",
        "time",
        "baseline",
        "time",
        "upstream",
        "tok/doc",
    ]
    rows = [line.split() for line in out.splitlines() if line.startswith("local_")]
    assert [row[:2] for row in rows] == [["local_arc_easy", "acc_norm"], ["local_winogrande", "acc_norm"]]
    for row in rows:
        float(row[2]), float(row[3]), float(row[4]), float(row[5])  # values and stderr of both models

    cost_header = next(line for line in out.splitlines() if line.startswith("stage"))
    assert "out tok" in cost_header  # the per-stage cost table of the stack's runs follows the results
    assert any(line.startswith("facts") for line in out.splitlines())
    assert any(line.startswith("total") for line in out.splitlines())

    report = json.loads((output / "results.json").read_text())
    assert report["baseline"] == tiny_model_id and report["stack"]["name"] == "tiny-two"
    assert {row["task"] for row in report["table"]} == {"local_arc_easy", "local_winogrande"}
    arc = report["tasks"]["local_arc_easy"]
    assert arc["stack"]["wall_time_s"] > 0 and arc["baseline"]["wall_time_s"] > 0
    assert arc["stack"]["results"]["results"]["local_arc_easy"]["acc_norm,none"] in (0.0, 0.5, 1.0)  # of 2 documents
    assert arc["baseline"]["cost"]["upstream_completion_tokens"] == 0

    traces = json.loads((output / "traces_local_winogrande.json").read_text())
    assert [doc["doc_id"] for doc in traces["documents"]] == [0, 1]
    # WinoGrande has one context per option; the upstream stages read the document once.
    assert all(len(doc["traces"]) == 1 for doc in traces["documents"])
    assert traces["documents"][0]["traces"][0]["messages"][0]["stage"] == "facts"
    samples = json.loads((output / "samples_local_arc_easy_stack.json").read_text())
    assert len(samples) == 2 and samples[0]["doc_id"] == 0
    assert (output / "samples_local_arc_easy_baseline.json").is_file()


def test_missing_data_file_names_the_path(capsys, benchmark_fixture_data, two_stage_stack_folder, tmp_path):
    missing = tmp_path / "arc-missing.jsonl"
    code, _, err = run_fslm(
        capsys,
        "eval",
        "--stack",
        str(two_stage_stack_folder),
        "--tasks",
        "local_arc_easy",
        "--data-file",
        f"local_arc_easy={missing}",
    )
    assert code == 1
    assert err.strip() == (
        f"error: benchmark 'local_arc_easy': given data file not found: {missing}; check the path given for it"
    )


def test_empty_data_folder_names_the_default_path(capsys, two_stage_stack_folder, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(FIXTURES_DIR))
    code, _, err = run_fslm(
        capsys, "eval", "--stack", str(two_stage_stack_folder), "--tasks", "local_piqa", "--data-dir", str(tmp_path)
    )
    assert code == 1
    assert f"not found: {tmp_path / 'piqa' / 'valid_first338.jsonl'}" in err
    assert "Traceback" not in err
    # --data-dir points this evaluation only at its folder: the caller's setting is back afterwards
    assert os.environ[DATA_DIR_ENV] == str(FIXTURES_DIR)


def test_stack_that_cannot_be_loaded_is_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\nstages: []\n")
    code, _, err = run_fslm(capsys, "eval", "--stack", str(bad), "--tasks", "local_arc_easy")
    assert code == 1 and err.startswith(f"error: invalid stack file {bad}: stages")
    code, _, err = run_fslm(capsys, "eval", "--stack", str(tmp_path / "none.yaml"), "--tasks", "local_arc_easy")
    assert code == 1 and err.strip() == f"error: stack file not found: {tmp_path / 'none.yaml'}"


def test_unknown_task_lists_the_local_benchmark_tasks():
    manager = BenchmarkTaskManager(include_defaults=False)
    with pytest.raises(UnknownNameError) as raised:
        manager.check_tasks(["local_arc_easy", "local_arc_eazy"])
    message = str(raised.value)
    assert message.startswith("--tasks: unknown benchmark task 'local_arc_eazy'; known: ")
    for name in ("local_arc_easy", "local_gsm8k", "local_mmlu", "local_boolq", "local_tinybenchmarks"):
        assert name in message


@pytest.mark.slow
def test_unknown_task_on_the_command_line_lists_the_local_tasks(capsys, two_stage_stack_folder):
    """Slow only because telling an unknown name from lm-eval's own tasks indexes them all (about 13 s)."""
    code, _, err = run_fslm(capsys, "eval", "--stack", str(two_stage_stack_folder), "--tasks", "local_arc_eazy")
    assert code == 1
    assert err.startswith(
        "error: --tasks: unknown benchmark task 'local_arc_eazy'; known: local_arc_challenge, local_arc_easy"
    )
    assert "Traceback" not in err


def test_unknown_data_file_task_is_named(capsys, two_stage_stack_folder):
    code, _, err = run_fslm(
        capsys,
        "eval",
        "--stack",
        str(two_stage_stack_folder),
        "--tasks",
        "local_piqa",
        "--data-file",
        "local_pica=/tmp/x.jsonl",
    )
    assert code == 1 and err.startswith("error: --data-file: unknown benchmark task 'local_pica'")


def test_table_lines_up_metrics_of_both_models():
    from fslm_core.lmeval import RunResult

    def run(value, seconds, tokens):
        results = {
            "results": {
                "t": {
                    "alias": "t",
                    "acc,none": value,
                    "acc_stderr,none": 0.1,
                    "exact_match,strict-match": 0.5,
                    "exact_match_stderr,strict-match": "N/A",
                }
            }
        }
        return RunResult(results, seconds, {"upstream_tokens_per_document": tokens})

    assert metric_rows(run(0.25, 1, 0).results) == {
        ("t", "acc"): (0.25, 0.1),
        ("t", "exact_match (strict-match)"): (0.5, None),
    }
    rows = comparison_table({"t": {"stack": run(0.75, 12.0, 40.0), "baseline": run(0.5, 3.0, 0.0)}}, with_baseline=True)
    text = render_table(rows, with_baseline=True)
    assert "t     acc                         0.7500  0.1000  0.5000    0.1000  12.0 s      3.0 s          40.0" in text
    assert "exact_match (strict-match)  0.5000  -       0.5000    -" in text


def test_python_m_route_runs_lm_eval_with_the_fslm_model(two_stage_stack_folder, tmp_path):
    env = {**os.environ, DATA_DIR_ENV: str(FIXTURES_DIR), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "fslm_core.lmeval",
            "--model",
            "fslm",
            "--model_args",
            f"stack={two_stage_stack_folder},final_prompt=plain,trace_dir={tmp_path / 'out'}",
            "--tasks",
            "local_piqa",
            "--limit",
            "2",
            "--batch_size",
            "auto",
            "--max_batch_size",
            "4",
            "--output_path",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "|local_piqa|" in completed.stdout.replace(" ", "")
    assert list((tmp_path / "out").rglob("results_*.json"))
    traces = json.loads((tmp_path / "out" / "traces_local_piqa.json").read_text())
    assert [doc["doc_id"] for doc in traces["documents"]] == [0, 1]
    assert traces["documents"][0]["traces"][0]["messages"][0]["stage"] == "facts"


@pytest.fixture
def unloadable_stack_file(tmp_path):
    """A stack whose model passes every check but fails to load: an error naming it means a load was tried."""
    weights = tmp_path / "not-a-model"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    stack = Stack(name="unloadable", stages=[Stage(name="answer", model=f"hf:{weights}", instruction="Answer.")])
    return stack.save(tmp_path / "unloadable.yaml")


def test_python_m_route_reports_a_missing_data_file_in_one_line_before_loading_a_model(unloadable_stack_file, tmp_path):
    env = {**os.environ, DATA_DIR_ENV: str(tmp_path), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "fslm_core.lmeval",
            "--model",
            "fslm",
            "--model_args",
            f"stack={unloadable_stack_file}",
            "--tasks",
            "local_piqa",
            "--limit",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert completed.returncode == 1
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: benchmark 'local_piqa': data file") and DATA_DIR_ENV in last
    assert "fslm eval --data-file" not in last  # this is lm-eval's command line: no other command recommended
    assert "Traceback" not in completed.stderr


@pytest.mark.slow
def test_eval_smollm2_stack_against_the_model_alone(capsys, benchmark_fixture_data, tmp_path, one_torch_thread):
    """The issue's demo on fixtures: the fslm-paper stack on SmolLM2 beside SmolLM2 alone, offline."""
    code, out, err = run_fslm(
        capsys,
        "eval",
        "--decomposition",
        "fslm-paper",
        "--model",
        "smollm2-135m-instruct",
        "--tasks",
        "local_arc_easy",
        "--limit",
        "5",
        "--num-fewshot",
        "0",
        "--baseline",
        "smollm2-135m-instruct",
        "--output",
        str(tmp_path),
    )
    assert code == 0, err
    (row,) = [line.split() for line in out.splitlines() if line.startswith("local_arc_easy")]
    stack_acc, stack_stderr, baseline_acc, baseline_stderr = map(float, row[2:6])
    assert 0.0 <= stack_acc <= 1.0 and 0.0 <= baseline_acc <= 1.0
    assert stack_stderr > 0.0 or stack_acc in (0.0, 1.0)
    report = json.loads((tmp_path / "results.json").read_text())
    cost = report["tasks"]["local_arc_easy"]["stack"]["cost"]
    assert cost["documents"] == 5 and cost["upstream_tokens_per_document"] > 0


def test_a_task_given_as_a_yaml_file_counts_the_upstream_tokens_and_keeps_its_traces(
    capsys, benchmark_fixture_data, two_stage_stack_folder, tmp_path
):
    from fslm_plugin_benchmarks.tasks import TASKS_DIR

    task_file = tmp_path / "my_arc_copy.yaml"
    text = (TASKS_DIR / "local_arc_easy.yaml").read_text()
    task_file.write_text(text.replace("task: local_arc_easy", "task: my_arc_copy").replace("tag:", "# tag:"))
    output = tmp_path / "out"
    code, out, err = run_fslm(
        capsys,
        "eval",
        "--stack",
        str(two_stage_stack_folder),
        "--tasks",
        str(task_file),
        "--limit",
        "2",
        "--num-fewshot",
        "0",
        "--output",
        str(output),
    )
    assert code == 0, err
    report = json.loads((output / "results.json").read_text())
    (cost,) = [task["stack"]["cost"] for task in report["tasks"].values()]
    assert cost["documents"] == 2 and cost["upstream_completion_tokens"] > 0
    traces = json.loads((output / "traces_my_arc_copy.json").read_text())
    assert [document["doc_id"] for document in traces["documents"]] == [0, 1]
