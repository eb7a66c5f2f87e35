"""The local benchmark tasks build as lm-eval tasks over the fixtures, in the tinyBenchmarks formats."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

from fslm_core.lmeval import BenchmarkTaskManager
from fslm_core.plugins import get_registry
from fslm_plugin_benchmarks import (
    DATA_DIR_ENV, FIXTURES_DIR, LOCAL_TASKS, TAG, TASKS_DIR, BenchmarkDataError, local_task)
from fslm_plugin_benchmarks.data import data_dir, data_dir_candidates
from fslm_plugin_benchmarks.tasks import truthfulqa_mc2_results

TASK_NAMES = [task.name for task in LOCAL_TASKS]


@pytest.fixture
def benchmark_fixture_data(monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(FIXTURES_DIR))
    return FIXTURES_DIR


@pytest.fixture(scope="module")
def manager():
    return BenchmarkTaskManager(include_defaults=False)


def first_requests(manager, name, num_fewshot=0):
    """The lm-eval requests of the first two documents of a local task."""
    task = manager.load([name])["tasks"][name]
    task.set_config("num_fewshot", num_fewshot)
    task.build_all_requests(limit=2, rank=0, world_size=1)
    return task, task.instances


def test_hook_registers_every_local_task():
    registry = get_registry()
    assert set(TASK_NAMES) <= set(registry.names("benchmarks"))
    assert {"local_arc_easy", "local_arc_challenge", "local_mmlu", "local_hellaswag", "local_winogrande",
            "local_truthfulqa_mc1", "local_truthfulqa_mc2", "local_gsm8k", "local_piqa", "local_boolq"} == set(TASK_NAMES)
    assert registry.provider("benchmarks", "local_arc_easy").distribution == "fslm-plugin-benchmarks"


@pytest.mark.parametrize("name", TASK_NAMES)
def test_config_paths_are_absolute_and_exist(benchmark_fixture_data, name):
    config = local_task(name).build_config()
    files = config["dataset_kwargs"]["fslm_files"]
    assert files["test"]
    for path in files.values():
        assert os.path.isabs(path) and os.path.exists(path)
        assert path.startswith(str(benchmark_fixture_data))


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_builds_requests_over_the_fixtures(benchmark_fixture_data, manager, name):
    task, instances = first_requests(manager, name)
    assert {instance.doc_id for instance in instances} == {0, 1}
    expected_type = "generate_until" if name == "local_gsm8k" else "loglikelihood"
    assert {instance.request_type for instance in instances} == {expected_type}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_runs_with_its_own_number_of_shots_on_the_sample_rows(benchmark_fixture_data, manager, name):
    """The packaged rows are the data after a plain `pip install`: enough of them for each task's shots."""
    task = manager.load([name])["tasks"][name]
    task.build_all_requests(limit=1, rank=0, world_size=1)
    assert {instance.doc_id for instance in task.instances} == {0}


def test_arc_prompt_and_shots_follow_tinyarc(benchmark_fixture_data, manager):
    assert local_task("local_arc_easy").build_config()["num_fewshot"] == 25
    _, instances = first_requests(manager, "local_arc_easy", num_fewshot=2)
    context, continuation = instances[0].args
    assert context.count("Question: ") == 3 and context.endswith("\nAnswer:")
    assert "Which technology was developed most recently?" in context
    assert [i.args[1] for i in instances if i.doc_id == 0] == [
        " cellular telephone", " television", " refrigerator", " airplane"]


def test_mmlu_prompt_names_the_subject_and_scores_letters(benchmark_fixture_data, manager):
    task, instances = first_requests(manager, "local_mmlu")
    context = instances[0].args[0]
    assert context.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    assert "\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer:" in context
    assert [i.args[1] for i in instances if i.doc_id == 0] == [" A", " B", " C", " D"]
    assert len(task.eval_docs) == 5  # two subject files: 3 + 2 rows


def test_winogrande_scores_the_sentence_end_after_each_option(benchmark_fixture_data, manager):
    _, instances = first_requests(manager, "local_winogrande")
    doc0 = [i.args for i in instances if i.doc_id == 0]
    assert [context for context, _ in doc0] == [
        "Sarah was a much better surgeon than Maria so Sarah",
        "Sarah was a much better surgeon than Maria so Maria",
    ]
    assert {continuation for _, continuation in doc0} == {" always got the easier cases."}


def test_truthfulqa_primer_and_true_answer_first(benchmark_fixture_data, manager):
    task, instances = first_requests(manager, "local_truthfulqa_mc2")
    context = instances[0].args[0]
    assert context.startswith("Q: What is human life expectancy in the United States?")
    assert context.endswith("Q: What is the smallest country in the world that is at least one square mile in area?\nA:")
    labels = task.eval_docs[0]["mc2_targets"]["labels"]
    assert labels == sorted(labels, reverse=True) and labels[0] == 1


def test_gsm8k_generates_until_the_next_question(benchmark_fixture_data, manager):
    _, instances = first_requests(manager, "local_gsm8k")
    context, gen_kwargs = instances[0].args
    assert context.startswith("Question: Natalia sold clips") and context.endswith("\nAnswer:")
    assert gen_kwargs["until"] == ["Question:", "</s>", "<|im_end|>"]


def test_boolq_targets_are_choice_indices(benchmark_fixture_data, manager):
    task, instances = first_requests(manager, "local_boolq")
    assert instances[0].args[0].endswith("?\nAnswer:")
    assert [task.doc_to_target(doc) for doc in list(task.eval_docs)[:2]] == [0, 1]  # "false", "true"


def test_each_build_returns_a_fresh_config(benchmark_fixture_data):
    first = local_task("local_gsm8k").build_config()
    first["generation_kwargs"]["until"] = ["changed"]  # lm-eval updates configs in place
    assert local_task("local_gsm8k").build_config()["generation_kwargs"]["until"] == ["Question:", "</s>", "<|im_end|>"]


def test_missing_default_file_names_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(BenchmarkDataError, match=str(tmp_path / "arc" / "ARC-Easy-Dev.jsonl")):
        local_task("local_arc_easy").build_config()


def test_missing_given_file_names_the_path(benchmark_fixture_data, tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(BenchmarkDataError, match=f"given data file not found: {missing}"):
        local_task("local_piqa").build_config(data_path=missing)


def test_another_file_of_the_same_format_drops_in(benchmark_fixture_data, tmp_path):
    rows = (FIXTURES_DIR / "piqa" / "valid_first338.jsonl").read_text().splitlines()[:2]
    replacement = tmp_path / "piqa_two.jsonl"
    replacement.write_text("\n".join(rows) + "\n")
    manager = BenchmarkTaskManager(include_defaults=False, data_files={"local_piqa": replacement})
    task = manager.load(["local_piqa"])["tasks"]["local_piqa"]
    assert len(task.eval_docs) == 2


def test_tag_loads_every_local_task(benchmark_fixture_data, manager):
    loaded = manager.load([TAG])["tasks"]
    assert set(loaded) == set(TASK_NAMES)


def test_lm_eval_reads_the_same_task_yaml_with_its_own_task_manager(benchmark_fixture_data, manager):
    """`lm_eval --include_path <TASKS_DIR>` builds the very requests fslm builds."""
    from lm_eval.tasks import TaskManager

    own = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert set(TASK_NAMES) <= set(own.all_tasks) and TAG in own.all_tags
    for name in TASK_NAMES:
        loaded = own.load([name])["tasks"][name]
        loaded.set_config("num_fewshot", 0)
        loaded.build_all_requests(limit=2, rank=0, world_size=1)
        _, instances = first_requests(manager, name)
        assert [i.args for i in loaded.instances] == [i.args for i in instances], name


def test_without_a_data_folder_tasks_score_the_packaged_sample_rows_and_say_so(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/data here, and an installed plugin has no checkout next to it
    monkeypatch.setattr("fslm_plugin_benchmarks.data.data_dir_candidates", lambda: [FIXTURES_DIR.resolve()])
    monkeypatch.setattr("fslm_plugin_benchmarks.data._warned_sample_rows", set())
    with caplog.at_level("WARNING"):
        config = local_task("local_boolq").build_config()
    assert config["dataset_kwargs"]["fslm_files"]["test"] == str(FIXTURES_DIR.resolve() / "boolq" / "val_first270.jsonl")
    assert "sample rows" in caplog.text and DATA_DIR_ENV in caplog.text


def test_data_folder_defaults_to_shared_data_next_to_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(project)
    assert data_dir_candidates()[0] == (tmp_path / "shared" / "data").resolve()
    assert data_dir() == (tmp_path / "shared" / "data").resolve()


def test_mc2_is_the_true_answer_mass_and_survives_tiny_probabilities():
    doc = {"mc2_targets": {"choices": ["a", "b", "c"], "labels": [1, 1, 0]}}
    result = truthfulqa_mc2_results(doc, [(-1.0, False), (-2.0, False), (-3.0, False)])
    expected = (math.exp(-1) + math.exp(-2)) / (math.exp(-1) + math.exp(-2) + math.exp(-3))
    assert result["acc"] == pytest.approx(expected)
    far = truthfulqa_mc2_results(doc, [(-2000.0, False), (-2001.0, False), (-2000.5, False)])
    assert 0.0 < far["acc"] < 1.0


def test_fixtures_mirror_the_data_layout():
    names = {str(path.relative_to(FIXTURES_DIR)) for path in FIXTURES_DIR.rglob("*") if path.is_file()}
    for task in LOCAL_TASKS:
        for file in task.files.values():
            assert file in names or any(name.startswith(file + "/") for name in names)
    json.loads((FIXTURES_DIR / "truthfulqa" / "mc_task_dev100.json").read_text())
