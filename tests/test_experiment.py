"""`fslm experiment --quick` on the tiny random model: every step's outputs exist, parse and resume after a kill.

Accuracy is not the point here (a random model answers at chance); the shape of
what each step writes and the resumption are. The paired statistics are tested
on known cases.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from fslm_cli import run_fslm
from fslm_plugin_benchmarks import DATA_DIR_ENV, FIXTURES_DIR

from fslm_core.errors import InputError, UnknownNameError
from fslm_core.experiment import (
    STEPS,
    compare,
    load_experiment_config,
    mcnemar_exact,
    paired_families,
    report,
    run_experiment,
)
from fslm_core.experiment.answer_bias import MostCommonAnswer, correct_options
from fslm_core.experiment.comparisons import holm
from fslm_core.experiment.eval_runs import upstream_per_option
from fslm_core.experiment.provenance import commit_line
from fslm_core.experiment.report import adapter_parameters
from fslm_core.lmeval import task_manager

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALPACA_TINY = Path(__file__).parent / "fixtures" / "alpaca_tiny.json"
TASKS = ["local_arc_easy", "local_gsm8k"]
SYSTEMS = ["single", "single-lora", "stack-trained", "stack-untrained"]


def instruction_data(folder: Path) -> Path:
    """24 instruction rows (the fixture's usable ones, four times over), so --quick has shards to hold out."""
    rows = [row for row in json.loads(ALPACA_TINY.read_text()) if isinstance(row.get("instruction"), str)]
    rows = [row for row in rows if row.get("output")]
    many = [{**row, "instruction": f"{row['instruction']} ({copy})"} for copy in range(4) for row in rows]
    path = folder / "instructions.json"
    path.write_text(json.dumps(many))
    return path


def write_config(folder: Path, model_id: str, **changes) -> Path:
    """A config for the tiny model: it is its own teacher, one call per stage, and every target is kept."""
    config = {
        "name": "tiny-paper",
        "data": str(instruction_data(folder)),
        "output": "runs/tiny",
        "report": "report/results.md",
        "student": model_id,
        "filter_targets": False,
        "distill": {"teacher": model_id, "teacher_prompt": "per-stage"},
        "train": {"learning_rate": 1e-2},
        "baseline": {"rank": 32},
        "evaluation": {"tasks": TASKS, "batch_size": 4},
        "dtype": "float32",
        # The random model writes no notes, so its targets would all be filtered out: variants keep them all.
        "ablations": {
            "teachers": {"per-stage": {"teacher": model_id}},
            "variants": {
                "targets": {"filter_targets": False},
                "mixed": {"filter_targets": False, "train": {"upstream_inputs": "mixed"}},
            },
        },
        "demo_prompts": ["What is the capital of France?"],
        **changes,
    }
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def finished(tiny_model_id, tmp_path_factory):
    folder = tmp_path_factory.mktemp("experiment")
    config = load_experiment_config(write_config(folder, tiny_model_id), quick=True)
    lines: list[str] = []
    state = run_experiment(config, echo=lines.append)
    return config, state, lines


def test_quick_run_writes_every_step_and_reports_progress(finished):
    config, state, lines = finished
    output = config.output
    assert output.name == "tiny-quick"  # --quick runs in a folder of its own
    assert list(state["steps"]) == list(STEPS)
    for index, step in enumerate(STEPS, start=1):
        assert f"[{index}/{len(STEPS)}] {step} ..." in lines
    assert (output / "distilled" / "manifest.json").is_file()
    assert (
        json.loads((output / "filtered" / "manifest.json").read_text())["examples"] == state["steps"]["filter"]["kept"]
    )
    assert (output / "stack" / "stack.yaml").is_file() and (output / "baseline" / "stack.yaml").is_file()
    # Four adapters of rank 8 hold as many parameters as one of rank 32.
    assert adapter_parameters(output / "stack") == adapter_parameters(output / "baseline") > 0


def test_ablations_compare_teachers_and_training_variants_on_the_same_examples(finished):
    config, _, _ = finished
    results = json.loads((config.output / "ablations.json").read_text())
    assert set(results["teachers"]) == {"main", "per-stage"}
    assert all(0.0 <= info["kept_share"] <= 1.0 for info in results["teachers"].values())
    variants = results["variants"]
    assert set(variants) == {"targets", "mixed"}
    assert variants["targets"]["held_out_examples"] == variants["mixed"]["held_out_examples"] > 0
    for info in variants.values():
        assert set(info["stages"]) == {"interpret", "recall", "reason", "answer"}
        assert all(loss > 0 for loss in info["target_loss"].values())
    assert (config.output / "ablations" / "stack-mixed" / "generated" / "reason.json").is_file()


def test_every_system_is_scored_on_the_same_documents(finished):
    config, _, _ = finished
    for task in TASKS:
        results = [json.loads((config.output / "eval" / s / f"{task}.json").read_text()) for s in SYSTEMS]
        ids = {tuple(result["doc_ids"]) for result in results}
        assert len(ids) == 1 and len(ids.pop()) == (2 if task == "local_gsm8k" else 3)
        for result in results:
            assert set(result["scores"]) == {str(i) for i in result["doc_ids"]}
            assert all(0.0 <= score <= 1.0 for score in result["scores"].values())
            assert result["provenance"]["dtype"] == "float32"  # the experiment's, for every system
    stacked = json.loads((config.output / "eval" / "stack-trained" / "local_arc_easy.json").read_text())
    assert stacked["cost"]["upstream_stages"] == 3 and stacked["sample_traces"]
    assert stacked["cost"]["documents"] == len(stacked["doc_ids"])  # upstream stages ran on the scored ones only


def test_stage_checks_and_report(finished):
    config, _, _ = finished
    checks = json.loads((config.output / "stage_checks.json").read_text())
    assert set(checks["stacks"]) == {"trained", "untrained"}
    assert set(checks["stacks"]["trained"]) == {"interpret", "recall", "reason", "answer"}
    assert len(checks["demo"]["trained"]) == 1
    # --quick writes no report into the docs; the report is written from the same folder on demand.
    from fslm_core.experiment.report import write_report
    from fslm_core.plugins import get_registry

    report_path = config.output.parent / "results.md"
    state = json.loads((config.output / "experiment.json").read_text())
    write_report(config.model_copy(update={"report": report_path}), config.output, state, get_registry())
    text = report_path.read_text()
    for heading in (
        "## Accuracy",
        "## Paired differences",
        "## Reading",
        "## Cost",
        "## Do the stages do their roles?",
    ):
        assert heading in text
    assert "stack-trained − single-lora" in text and "local_gsm8k" in text
    tasks = len(config.evaluation.tasks)
    assert text.count("| all tasks (") == 3  # one pooled row per comparison
    assert "Holm" in text and text.count(" | stack-trained − single | ") == tasks + 1  # each task, and pooled
    assert (config.output.parent / "results_traces" / "traces_local_arc_easy.md").is_file()
    # ARC's correct options come from its data: the score of always giving the most common one is shown
    arc_row = next(line for line in text.splitlines() if line.startswith("| local_arc_easy | acc"))
    assert float(arc_row.rstrip(" |").rsplit("|", 1)[1]) > 0


def test_verify_reruns_a_finished_result_and_names_each_document_that_differs(finished, tmp_path, capsys):
    config, _, _ = finished
    config_file = config.output.parent.parent / "experiment.yaml"
    copy = tmp_path / "copy"
    shutil.copytree(config.output, copy)
    verify = ["experiment", str(config_file), "--quick", "--output", str(copy), "--verify"]

    code, out, err = run_fslm(capsys, *verify, "stack-trained:local_arc_easy")
    assert code == 0, err
    documents = len(json.loads((copy / "eval" / "stack-trained" / "local_arc_easy.json").read_text())["scores"])
    assert f"stack-trained on local_arc_easy: all {documents} document scores reproduced" in out
    assert out.rstrip().endswith("1 of 1 results reproduced document by document")

    path = copy / "eval" / "stack-trained" / "local_arc_easy.json"
    result = json.loads(path.read_text())
    first = next(iter(result["scores"]))
    result["scores"][first] = 1.0 - result["scores"][first]
    path.write_text(json.dumps(result))
    code, out, _ = run_fslm(capsys, *verify, "stack-trained:local_arc_easy")
    assert code == 1
    assert f"1 of {documents} document scores differ: {first} (recorded by " in out

    code, _, err = run_fslm(capsys, *verify, "nobody:local_arc_easy")
    assert code == 1 and "--verify nobody:local_arc_easy: no system 'nobody'" in err

    # A result moved aside to be made again: the finished evaluate step runs just the missing one.
    original = json.loads((config.output / "eval" / "stack-trained" / "local_arc_easy.json").read_text())
    path.unlink()
    code, out, err = run_fslm(
        capsys, "experiment", str(config_file), "--quick", "--output", str(copy), "--only", "evaluate"
    )
    assert code == 0, err
    assert "stack-trained on local_arc_easy: " in out and out.count("done earlier") == len(SYSTEMS) * len(TASKS) - 1
    assert json.loads(path.read_text())["scores"] == original["scores"]


def test_a_changed_config_is_refused_for_the_same_folder(finished, tiny_model_id):
    config, _, _ = finished
    changed = config.model_copy(update={"seed": 1})
    with pytest.raises(InputError, match="other settings \\(changed: seed"):
        run_experiment(changed, echo=lambda line: None)


def test_a_run_follows_its_data_file_by_content_not_by_location(finished, tmp_path):
    from fslm_core.experiment.pipeline import Experiment

    config, _, _ = finished
    moved = tmp_path / "elsewhere" / config.data.name
    moved.parent.mkdir()
    moved.write_bytes(config.data.read_bytes())
    experiment = Experiment(config.model_copy(update={"data": moved}), echo=lambda line: None)
    assert "report" in experiment.state["steps"]  # another checkout's copy of the same data opens the run
    moved.write_bytes(config.data.read_bytes().replace(b"(0)", b"(9)"))
    with pytest.raises(InputError, match="other settings \\(changed: data\\)"):
        Experiment(config.model_copy(update={"data": moved}), echo=lambda line: None)


def test_bad_config_fails_before_any_model_loads(tmp_path, tiny_model_id):
    with pytest.raises(InputError, match="config: file not found"):
        load_experiment_config(tmp_path / "missing.yaml")
    bad = write_config(tmp_path, tiny_model_id, evaluation={"tasks": []})
    with pytest.raises(InputError, match="evaluation.tasks"):
        load_experiment_config(bad)
    unknown = load_experiment_config(write_config(tmp_path, tiny_model_id, student="no-such-model"))
    with pytest.raises(UnknownNameError, match="student: unknown model id 'no-such-model'"):
        run_experiment(unknown, echo=lambda line: None)
    bad_train = load_experiment_config(write_config(tmp_path, tiny_model_id, train={"rank": 0}))
    with pytest.raises(InputError, match="config train: rank"):
        run_experiment(bad_train, echo=lambda line: None)
    main_teacher = write_config(tmp_path, tiny_model_id, ablations={"teachers": {"main": {"teacher": tiny_model_id}}})
    with pytest.raises(InputError, match="ablations.teachers: 'main' names the experiment's own teacher"):
        load_experiment_config(main_teacher)
    (tmp_path / "a-file").write_text("not a folder")
    into_a_file = load_experiment_config(write_config(tmp_path, tiny_model_id, output="a-file"))
    with pytest.raises(InputError, match="output: .*a-file is a file; give a folder"):
        run_experiment(into_a_file, echo=lambda line: None)


@pytest.mark.slow
def test_killed_experiment_resumes_without_redoing_finished_steps(tiny_model_id, tmp_path):
    config_file = write_config(tmp_path, tiny_model_id)
    command = [sys.executable, "-m", "fslm_core.cli", "experiment", str(config_file), "--quick"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    state_file = tmp_path / "runs" / "tiny-quick" / "experiment.json"
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if state_file.is_file() and "train-stack" in json.loads(state_file.read_text()).get("steps", {}):
            break
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = json.loads(state_file.read_text())["steps"]
    assert {"distill", "filter", "train-stack"} <= set(before) and "report" not in before

    # Resumed up to the step after the next: the later steps are the `finished` fixture's to run (it costs a minute).
    until = STEPS[STEPS.index("train-stack") + 2]
    again = subprocess.run(command + ["--until", until], env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    after = json.loads(state_file.read_text())["steps"]
    assert list(after) == list(STEPS[: STEPS.index(until) + 1])
    for step in before:
        assert after[step] == before[step]  # finished steps were not run again
        assert f"{step}: done earlier" in again.stdout


def test_the_committed_paper_run_opens_under_settings_added_after_it(tmp_path):
    """examples/paper_experiment/run was written before newer settings existed: unset, they must not refuse it."""
    from fslm_core.experiment.pipeline import Experiment

    config = load_experiment_config(Path(__file__).parents[1] / "examples" / "paper_experiment" / "experiment.yaml")
    if not config.data.is_file():  # the Alpaca subset lies outside the repository, in ../shared/data
        stand_in = tmp_path / config.data.name  # the run's record names its data by path: only the name is checked
        stand_in.write_bytes(ALPACA_TINY.read_bytes())
        config = config.model_copy(update={"data": stand_in})
    experiment = Experiment(config, echo=lambda line: None)
    assert "report" in experiment.state["steps"] and config.evaluation.max_new_tokens is None


def test_paired_statistics_on_known_cases():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    same = compare([1, 0, 1, 0], [1, 0, 1, 0])
    assert same.difference == 0 and same.p_value == 1.0 and same.test == "McNemar exact"
    better = compare([1] * 30 + [0] * 10, [0] * 30 + [0] * 10)
    assert better.difference == pytest.approx(0.75) and better.p_value < 1e-6 and better.significant
    assert better.a_only == 30 and better.b_only == 0
    graded = compare([0.9, 0.8, 0.7, 0.95], [0.1, 0.2, 0.15, 0.3])
    assert graded.test == "paired bootstrap" and graded.ci_low > 0
    # Holm: the smallest p times the family size, the next times one less, never below an earlier one
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.6, 0.2]) == pytest.approx([0.6, 0.4]) and holm([]) == []


def test_pooled_rows_share_the_tasks_holm_family_and_incomparable_or_leaning_tasks_are_set_apart():
    def result(scores, stack=False, per_option=None):
        cost = {"upstream_stages": 3 if stack else 0}
        if per_option is not None:
            cost["upstream_once_per_document"] = not per_option
        return {"scores": {str(i): float(s) for i, s in enumerate(scores)}, "cost": cost, "sample_traces": []}

    yes_no = [1] * 60 + [0] * 40  # the correct option per document: "yes" is right on 60 of 100
    results = {
        # the stack says "yes" to everything: 0.60, a lead over the single model's 0.45 that is a lean
        ("stack-trained", "boolq"): result(yes_no, stack=True, per_option=False),
        ("single", "boolq"): result([1] * 30 + [0] * 30 + [1] * 15 + [0] * 25),
        ("stack-trained", "arc"): result([1, 0] * 50, stack=True, per_option=False),
        ("single", "arc"): result([1, 0] * 50),
        # an old partial-scoring result: one upstream trace per option in its sample traces
        ("stack-trained", "winogrande"): {**result([1] * 100, stack=True), "sample_traces": [{"traces": [{}, {}]}]},
        ("single", "winogrande"): result([0] * 100),
    }
    config = SimpleNamespace(evaluation=SimpleNamespace(tasks=["boolq", "arc", "winogrande"]))
    answers = {"boolq": MostCommonAnswer({i: int(not c) for i, c in enumerate(yes_no)}, {i: 2 for i in range(100)})}
    assert upstream_per_option(results[("stack-trained", "winogrande")])
    assert not upstream_per_option(results[("stack-trained", "arc")]) and not upstream_per_option(
        results[("single", "arc")]
    )

    family = paired_families.family(config, results, "stack-trained", "single", answers)
    assert list(family) == ["boolq", "arc", "all tasks (200 documents)", "all tasks but boolq (100 documents)"]
    raw = [comparison.p_value for comparison, _ in family.values()]
    assert [adjusted for _, adjusted in family.values()] == pytest.approx(holm(raw))  # one family, pools included
    assert paired_families.not_comparable(config, results, "stack-trained", "single") == ["winogrande"]
    (reading,) = report._reading(config, results, {pair: family for pair in report.COMPARISONS})[:1]
    assert "these tasks but boolq" in reading and "Left out as not comparable: winogrande" in reading


def test_a_report_names_the_commit_behind_its_results_and_warns_when_they_differ():
    def made_by(commit):
        return {"provenance": {"commit": commit}} if commit else {}

    assert commit_line([made_by("abc"), made_by("abc")]) == "Every result was produced by code commit `abc`."
    mixed = commit_line([made_by("abc"), made_by("def"), made_by("abc"), made_by(None)])
    assert mixed.startswith("**The results come from different or unrecorded code**: `abc` (2), `def` (1), ")
    assert "`not recorded` (1)" in mixed
    assert "different or unrecorded" in commit_line([made_by(None)])


def test_most_common_correct_answer_and_each_system_s_lean_come_from_the_task_data(monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(FIXTURES_DIR))
    manager = task_manager(["local_boolq", "local_winogrande", "local_truthfulqa_mc2", "local_gsm8k"])
    boolq = correct_options("local_boolq", [0, 1, 2, 3], manager)  # the fixture's labels: false, true, true, true
    assert boolq.gold == {0: 0, 1: 1, 2: 1, 3: 1} and boolq.labels == ("no", "yes")
    assert boolq.option == 1 and boolq.share == 0.75 and boolq.name == 'option 1 ("yes")' and boolq.two_options
    always_yes = {"0": 0.0, "1": 1.0, "2": 1.0, "3": 1.0}
    always_no = {"0": 1.0, "1": 0.0, "2": 0.0, "3": 0.0}
    assert boolq.share_answered(always_yes) == 1.0 and boolq.share_answered(always_no) == 0.0
    assert boolq.share_answered({"0": 1.0, "1": 1.0, "2": 0.0, "3": 0.0}) == 0.25
    # WinoGrande puts its options in the context and answers with an index: options without fixed text
    winogrande = correct_options("local_winogrande", [0, 1, 2], manager)  # answers 2, 1, 2
    assert winogrande.gold == {0: 1, 1: 0, 2: 1} and winogrande.labels is None and winogrande.name == "option 1"
    # several correct options (mc2), or no options at all: nothing to report
    assert correct_options("local_truthfulqa_mc2", [0, 1], manager) is None
    assert correct_options("local_gsm8k", [0, 1], manager) is None


def test_trained_stack_is_packaged_with_half_precision_adapters_and_its_targets(finished, tmp_path):
    import gzip

    from safetensors.torch import load_file

    from fslm_core import load_stack
    from fslm_core.experiment.package import package_stack

    config, _, _ = finished
    written = package_stack(config.output / "stack", config.output / "filtered", tmp_path / "pkg", "tiny-paper", "x")
    stack = load_stack(tmp_path / "pkg" / "stack")
    assert stack.name == "tiny-paper" and all(stage.adapter is not None for stage in stack.stages)
    for stage in stack.stages:
        tensors = load_file(str(stage.adapter / "adapter_model.safetensors"))
        original = load_file(str(config.output / "stack" / "adapters" / stage.name / "adapter_model.safetensors"))
        assert all(t.dtype.itemsize == 2 for t in tensors.values())
        assert all((tensors[k].float() - original[k]).abs().max() < 1e-2 for k in original)
        # The shipped folder names its base by model id (not the training machine's path) and says what it is.
        settings = json.loads((stage.adapter / "adapter_config.json").read_text())
        assert settings["base_model_name_or_path"] == stage.model
        assert f"`{stage.name}` stage" in (stage.adapter / "README.md").read_text()
    rows = [json.loads(line) for line in gzip.open(tmp_path / "pkg" / "data" / "distilled.jsonl.gz", "rt")]
    assert len(rows) == written["examples"] and set(rows[0]["targets"]) == {"interpret", "recall", "reason", "answer"}
    again = package_stack(config.output / "stack", config.output / "filtered", tmp_path / "pkg", "tiny-paper", "x")
    assert again["files"] == written["files"]  # a rerun writes the same bytes
    traces = stack.run(["What is the capital of France?"])
    assert [m.stage for m in traces[0].messages] == ["interpret", "recall", "reason", "answer"]


def test_the_report_says_when_the_filter_keeps_other_examples_than_the_stack_trained_on():
    from fslm_core.experiment.report import _filter_since_training

    trained = {"stages": {"a": {"examples": 697}}, "held_out_examples": 37, "finished": "2026-11-30T16:05:47Z"}
    same = {"filter": {"kept": 734}, "train-stack": trained}
    assert _filter_since_training(same) == []
    rerun = {"filter": {"kept": 731, "finished": "2026-12-03T22:37:36Z"}, "train-stack": trained}
    (line,) = _filter_since_training(rerun)
    assert "trained on 734 kept examples (finished 2026-11-30" in line and "keeps 731" in line
    assert _filter_since_training({"filter": {"kept": 5}}) == []  # not trained yet
    assert _filter_since_training(rerun, filter_targets=False) == []  # empty targets kept: no estimate
    recorded = {"filter": {"kept": 731}, "train-stack": {**trained, "filter_kept": 731}}
    assert _filter_since_training(recorded) == []
