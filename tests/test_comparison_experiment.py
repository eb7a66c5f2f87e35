"""`fslm experiment` on a declared comparison, on the tiny model: systems from a stack file, a model alone and a
stack ending in a tool; the documents asked for; results with their provenance; paired tests in the report."""

from __future__ import annotations

import json

import pytest
import yaml
from fslm_cli import run_fslm
from fslm_plugin_benchmarks import DATA_DIR_ENV, FIXTURES_DIR
from tiny_stacks import two_stage_stack

from fslm_core import Stack, Stage
from fslm_core.errors import InputError
from fslm_core.experiment import load_comparison_config
from fslm_core.experiment.eval_runs import read_result

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def comparison(tmp_path, tiny_model_id, tiny_adapters, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(FIXTURES_DIR))
    two_stage_stack(tiny_model_id, tiny_adapters).save(tmp_path / "two")
    Stack(
        name="tool-end",
        stages=[
            Stage(name="write", model=tiny_model_id, instruction="Write.", generation={"max_new_tokens": 4}),
            Stage(name="answer", tool="calculator", template="{prompt}", reads=["write"]),
        ],
    ).save(tmp_path / "tool-end.yaml")
    config = {
        "kind": "comparison",
        "name": "tiny comparison",
        "output": "run",
        "report": "report.md",
        "notes": "notes.md",
        "dtype": "float32",
        "systems": {
            "two": {"stack": "two", "description": "two stages"},
            "alone": {"model": tiny_model_id},
            "tool-end": {"stack": "tool-end.yaml"},
        },
        "comparisons": [["two", "alone"]],
        "evaluation": {
            "tasks": ["local_arc_easy", "local_gsm8k"],
            "document_ranges": {"local_arc_easy": [1, 4], "local_gsm8k": [2, 4]},
            "max_gen_toks": 8,
            "batch_size": 4,
        },
        "demo_prompts": ["What is 2 + 2?"],
    }
    (tmp_path / "notes.md").write_text("## What was tried\n\nTwo stages, then one model.\n")
    path = tmp_path / "comparison.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_comparison_evaluates_every_system_on_the_same_documents_and_reports_paired_tests(capsys, comparison):
    code, out, err = run_fslm(capsys, "experiment", str(comparison), "--until", "eval")
    assert code == 1  # a stack ending in a tool cannot score multiple-choice tasks: refused before any eval
    assert err.strip().splitlines()[-1].startswith("error: systems.tool-end: its stack ends with a tool stage")
    assert not (comparison.parent / "run" / "eval").exists()
    config = load_comparison_config(comparison)
    config = config.model_copy(update={"systems": {k: v for k, v in config.systems.items() if k != "tool-end"}})
    from fslm_core.experiment import run_comparison

    run_comparison(config, echo=lambda line: None)
    output = comparison.parent / "run"
    for system in ("two", "alone"):
        arc = read_result(output, system, "local_arc_easy")
        assert arc["doc_ids"] == [1, 2, 3] and len(arc["scores"]) == 3
        assert arc["provenance"]["dtype"] == "float32" and arc["provenance"]["packages"]["torch"]
        assert "commit" in arc["provenance"]
        assert arc["provenance"]["machine"]["cores"] >= 1
        gsm8k = read_result(output, system, "local_gsm8k")
        assert gsm8k["doc_ids"] == [2, 3] and gsm8k["cost"]["tokens_per_document"] > 0
        assert {answer["doc_id"] for answer in gsm8k["sample_answers"]} <= {2, 3}
    # Each result records its adapters' weights, so a stack trained again under its old name is not reused.
    adapters = read_result(output, "two", "local_gsm8k")["provenance"]["adapters"]
    assert adapters and all(len(digest) == 64 for digest in adapters.values())
    assert read_result(output, "alone", "local_gsm8k")["provenance"]["adapters"] == {}
    # Sample traces carry lm-eval's document ids, as the scores do.
    assert [document["doc_id"] for document in read_result(output, "two", "local_gsm8k")["sample_traces"]] == [2, 3]
    report = (comparison.parent / "report.md").read_text()
    assert "| two vs alone |" in report and "McNemar exact" in report
    assert "3 documents (ids 1 to 3" in report
    assert report.index("## What was tried") < report.index("## local_arc_easy")
    assert "## Demo prompts" in report and "prompt: What is 2 + 2?" in report

    # Run again as it is: every result is reused. Asked for other documents: the old results are refused by
    # name, not reused as if they were the new ones, and not overwritten.
    lines = []
    run_comparison(config, echo=lines.append, until="eval")
    assert sum(line.endswith(": done earlier") for line in lines) == 4
    evaluation = config.evaluation.model_copy(
        update={"document_ranges": {"local_arc_easy": (1, 4), "local_gsm8k": (1, 4)}}
    )
    moved = config.model_copy(update={"evaluation": evaluation})
    before = read_result(output, "two", "local_gsm8k")
    with pytest.raises(
        InputError, match=r"systems.(two|alone): its finished result .*local_gsm8k.json was made with other documents"
    ):
        run_comparison(moved, echo=lambda line: None, until="eval")
    assert read_result(output, "two", "local_gsm8k") == before


def test_a_stack_ending_in_a_tool_is_scored_on_generation_tasks(capsys, comparison):
    config = load_comparison_config(comparison)
    only_tool = config.model_copy(
        update={
            "systems": {k: v for k, v in config.systems.items() if k in ("tool-end", "alone")},
            "comparisons": (("tool-end", "alone"),),
            "evaluation": config.evaluation.model_copy(update={"tasks": ("local_gsm8k",)}),
        }
    )
    from fslm_core.experiment import run_comparison

    run_comparison(only_tool, echo=lambda line: None, until="eval")
    result = read_result(comparison.parent / "run", "tool-end", "local_gsm8k")
    assert result["cost"]["tool_seconds_per_document"] > 0
    assert all(score in (0.0, 1.0) for score in result["scores"].values())


def test_a_comparison_config_names_its_mistakes(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kind": "comparison",
                "name": "x",
                "output": "run",
                "systems": {"a": {"model": "m"}, "b": {"stack": "s", "model": "m"}},
                "evaluation": {"tasks": ["t"]},
            }
        )
    )
    with pytest.raises(InputError, match="systems.b: give either stack or model"):
        load_comparison_config(path)
    data = yaml.safe_load(path.read_text())
    data["systems"]["b"] = {"model": "m"}
    data["comparisons"] = [["a", "c"]]
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="comparisons.0: 'c' is not a system"):
        load_comparison_config(path)
    data["comparisons"], data["notes"] = [], "missing.md"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="notes: file not found: .*missing.md"):
        load_comparison_config(path)
    data["notes"] = None
    data["evaluation"]["document_ranges"] = {"u": [0, 5]}
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="document_ranges.u: not one of the tasks"):
        load_comparison_config(path)
    data["evaluation"]["document_ranges"] = {"t": [5, 5]}
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"document_ranges.t: \[5, 5\) holds no document ids"):
        load_comparison_config(path)
    data["evaluation"]["document_ranges"] = {}
    data["cascades"] = {"a": ["b", "b"]}
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="cascades.a: a cascade must be a stack system"):
        load_comparison_config(path)


def test_a_document_range_past_the_end_of_the_slice_is_refused_before_any_eval(comparison):
    from fslm_core.experiment import run_comparison

    config = load_comparison_config(comparison)
    evaluation = config.evaluation.model_copy(update={"document_ranges": {"local_gsm8k": (100000, 100010)}})
    config = config.model_copy(
        update={
            "systems": {k: v for k, v in config.systems.items() if k != "tool-end"},
            "evaluation": evaluation.model_copy(update={"tasks": ("local_gsm8k",)}),
        }
    )
    with pytest.raises(InputError, match=r"document_ranges.local_gsm8k: \[100000, 100010\) holds none of the task's"):
        run_comparison(config, echo=lambda line: None, until="eval")
    assert not (comparison.parent / "run" / "eval").exists()
    (comparison.parent / "a-file").write_text("not a folder")
    with pytest.raises(InputError, match="output: .*a-file is a file; give a folder"):
        run_comparison(config.model_copy(update={"output": comparison.parent / "a-file"}), echo=lambda line: None)


def test_the_notes_links_work_where_the_notes_file_is_and_in_the_report(tmp_path):
    from fslm_core.experiment.comparison_report import notes_for

    notes = tmp_path / "examples" / "exp" / "notes.md"
    notes.parent.mkdir(parents=True)
    notes.write_text("[a](calibration/a.md), [b](../../docs/b.md#x), [web](https://x.y/z), [here](#here)\n")
    text = notes_for(notes, tmp_path / "docs")
    assert text == "[a](../examples/exp/calibration/a.md), [b](b.md#x), [web](https://x.y/z), [here](#here)"
