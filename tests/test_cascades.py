"""Cascades: a stack defers the inputs it is unsure of to a fallback, in `fslm run` and in lm-eval scoring, and
`fslm calibrate` picks the threshold from development documents."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from fslm_cli import run_fslm
from lm_eval import simple_evaluate
from tiny_stacks import written

from conftest import SMOLLM2
from fslm_core import Stack, Stage
from fslm_core.api.backends import logprob_summary
from fslm_core.declarations import load_stack
from fslm_core.errors import InputError, StackFileError
from fslm_core.experiment.calibration import Document, choose, signal_curve
from fslm_core.lmeval import FslmLM, task_manager
from fslm_core.messages import SampleVote, Trace
from fslm_core.runtime.cascade import (
    FALLBACK_STAGE_PREFIX,
    choice_signals,
    fallback_stack,
    generation_signal,
    without_fallback,
)
from fslm_core.stage_settings import GENERATION_SIGNALS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def answer_stage(model: str, instruction: str = "Answer.", **settings) -> Stage:
    return Stage(name="answer", model=model, instruction=instruction, template="{prompt}", **settings)


def cascade(model: str, fallback: dict, **stage_settings) -> Stack:
    return Stack(name="cascade", stages=[answer_stage(model, **stage_settings)], fallback=fallback, dtype="float32")


# Declarations -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fallback", "message"),
    [
        ({"scoring": {"signal": "choice_margin", "below": 0.1}}, "give either stack or model"),
        ({"model": "m"}, "give generation, scoring or both"),
        ({"model": "m", "scoring": {"signal": "mean_logprob", "below": 0.1}}, "scoring.signal: expected one of"),
        ({"model": "m", "generation": {"signal": "choice_margin", "below": -1}}, "generation.signal: expected one of"),
        ({"model": "m", "generation": {"signal": "mean_logprob"}}, "give signal and below together"),
        ({"model": "m", "generation": {}}, "give signal and below, answer_form, or both"),
        ({"model": "m", "generation": {"answer_form": "integer"}}, "answer_form: expected one of number, whole_"),
        ({"model": "m", "scoring": {"answer_form": "number"}}, "scoring.answer_form: a scored choice is always"),
    ],
)
def test_a_fallback_names_what_answers_and_when(tmp_path, fallback, message):
    path = tmp_path / "stack.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "c", "stages": [{"name": "a", "model": "m", "instruction": "A."}], "fallback": fallback}
        )
    )
    with pytest.raises(StackFileError, match=message) as error:
        load_stack(path)
    assert "fallback" in str(error.value)


def test_a_stack_of_tools_has_no_log_probabilities_to_defer_on():
    with pytest.raises(ValueError, match="fallback.generation: every stage is a tool"):
        Stack(
            name="c",
            stages=[Stage(name="answer", tool="calculator")],
            fallback={"model": "m", "generation": {"signal": "mean_logprob", "below": -1}},
        )
    with pytest.raises(ValueError, match="agreement needs the last model stage \\('program'\\) to sample"):
        Stack(
            name="c",
            stages=[Stage(name="program", model="m", instruction="P."), Stage(name="run", tool="python")],
            fallback={"model": "m", "generation": {"signal": "agreement", "below": 0.5}},
        )


def test_an_answer_a_tool_wrote_is_judged_by_the_model_message_the_tool_ran():
    votes = [
        SampleVote(text="print(16)", key="16", mean_logprob=-0.2, chosen=True),
        SampleVote(text="print(4*4)", key="16", mean_logprob=-0.4),
        SampleVote(text="print(37)", key="37", mean_logprob=-0.3),
        SampleVote(text="oops", key=None),
    ]
    program = written("program", "print(16)", mean_logprob=-0.2, min_logprob=-1.5, p10_logprob=-1.0, votes=votes)
    run = written("run", "16", model="tool:python", prompt_tokens=0, completion_tokens=0, latency_s=0.0)
    trace = Trace(stack="s", prompt="q", messages=[program, run], answer="16")
    assert program.agreement == 0.5 and run.agreement is None
    assert {signal: generation_signal(trace, signal) for signal in GENERATION_SIGNALS} == {
        "mean_logprob": -0.2,
        "min_logprob": -1.5,
        "p10_logprob": -1.0,
        "agreement": 0.5,
    }
    no_answer = program.model_copy(update={"votes": [vote.model_copy(update={"key": None}) for vote in votes]})
    assert no_answer.agreement == 0.0
    assert generation_signal(Trace(stack="s", prompt="q", messages=[run]), "mean_logprob") is None


def test_a_fallback_stack_path_is_kept_relative_to_the_stack_file(tmp_path, tiny_model_id):
    Stack(name="big", stages=[answer_stage(tiny_model_id)]).save(tmp_path / "big")
    front = cascade(tiny_model_id, {"stack": "big", "scoring": {"signal": "choice_margin", "below": 0.1}})
    front.save(tmp_path / "cascade.yaml")
    assert yaml.safe_load((tmp_path / "cascade.yaml").read_text())["fallback"]["stack"] == "big"
    loaded = load_stack(tmp_path / "cascade.yaml")
    assert loaded.fallback.stack == str((tmp_path / "big").resolve())
    assert fallback_stack(loaded).name == "big"
    assert without_fallback(loaded).fallback is None


# Signals and curves --------------------------------------------------------------------------------------


def test_confidence_signals_from_token_and_choice_log_probabilities():
    summary = logprob_summary([-0.1, -2.0, -0.3, -0.2, -0.4, -0.1, -0.1, -0.1, -0.1, -0.1, -0.5, -3.0])
    assert summary["min_logprob"] == -3.0
    assert summary["p10_logprob"] == -2.0  # 12 tokens: the second lowest
    assert summary["mean_logprob"] == pytest.approx(-7.0 / 12)
    assert logprob_summary([])["mean_logprob"] is None

    signals = choice_signals([(" Paris", -2.0), (" Lyon", -3.0), (" a long wrong answer", -6.0)])
    assert signals["choice_margin_raw"] == pytest.approx(1.0)
    assert signals["choice_margin"] == pytest.approx(-6.0 / 19 - -2.0 / 5)  # per character, as acc_norm ranks
    assert signals["choice_probability"] == pytest.approx(1 / (1 + math.exp(-1) + math.exp(-4)))
    assert choice_signals([(" only", -1.0)])["choice_margin"] is None


def documents(rows) -> list[Document]:
    return [
        Document("t", str(i), {"choice_margin": margin}, front, fallback)
        for i, (margin, front, fallback) in enumerate(rows)
    ]


def test_the_curve_defers_the_least_sure_first_and_the_target_picks_the_fewest_deferrals():
    # margin, stack right?, fallback right?
    docs = documents([(0.01, 0, 1), (0.02, 0, 1), (0.30, 1, 1), (0.40, 1, 0), (0.50, 1, 1)])
    curve = signal_curve(docs, "choice_margin")
    assert [(point.deferred, point.accuracy) for point in curve] == [
        (0, 0.6),
        (1, 0.8),
        (2, 1.0),
        (3, 1.0),
        (4, 0.8),
        (5, 0.8),
    ]
    assert curve[2].below == pytest.approx(0.16)  # halfway between the 2nd and 3rd margins
    assert curve[-1].below == math.inf
    signal, point, target = choose({"choice_margin": curve}, 5, fallback_accuracy=0.8, share=0.95)
    assert (signal, point.deferred) == ("choice_margin", 1)  # 0.8 >= 0.95 * 0.8 already
    assert "95%" in target
    _, point, _ = choose({"choice_margin": curve}, 5, fallback_accuracy=0.8, rate=0.5)
    assert point.deferred == 2 and point.accuracy == 1.0
    unknown = signal_curve(documents([(None, 0, 1), (0.2, 1, 1)]), "choice_margin")  # the first always defers
    with pytest.raises(InputError, match=r"--rate: every threshold defers more than 0% of the 2 documents"):
        choose({"choice_margin": unknown}, 2, fallback_accuracy=1.0, rate=0.0)


def test_equal_signals_defer_together_and_unknown_ones_always():
    docs = documents([(0.1, 0, 1), (0.1, 0, 1), (None, 0, 1), (0.5, 1, 1)])
    curve = signal_curve(docs, "choice_margin")
    assert [point.deferred for point in curve] == [1, 3, 4]


def test_answers_not_of_the_deferrals_form_defer_at_every_threshold():
    docs = documents([(0.1, 0, 1), (0.9, 0, 1), (0.5, 1, 0)])
    docs[1] = Document("t", "1", {"choice_margin": 0.9}, 0.0, 1.0, forced=True)  # sure, but a fraction
    curve = signal_curve(docs, "choice_margin")
    assert [(point.deferred, point.accuracy) for point in curve] == [(1, 2 / 3), (2, 1.0), (3, 2 / 3)]


def test_the_report_draws_a_generated_cascades_curve_and_says_when_times_come_from_two_machines(tmp_path):
    from fslm_core.experiment.cascade_report import cascade_sections
    from fslm_core.experiment.comparison_config import ComparisonConfig

    stack_file = tmp_path / "cascade.yaml"
    cascade(SMOLLM2, {"model": SMOLLM2, "generation": {"signal": "mean_logprob", "below": -0.5}}).save(stack_file)
    config = ComparisonConfig(
        kind="comparison",
        name="t",
        output=tmp_path,
        systems={"front": {"model": SMOLLM2}, "back": {"model": SMOLLM2}, "cascade": {"stack": str(stack_file)}},
        cascades={"cascade": ("front", "back")},
        evaluation={"tasks": ["t"]},
    )
    fast, slow = {"cpu": "A", "cores": 2, "flags": ["avx2"]}, {"cpu": "B", "cores": 2, "flags": ["avx2"]}

    def result(scores, machine, **fields):
        scores = dict(zip("1234", scores))
        return {"scores": scores, "doc_ids": list(scores), "output_type": "generate_until", "wall_time_s": 4.0,
                **fields, "provenance": {"machine": machine}}  # fmt: skip

    signals = {doc: {"mean_logprob": value} for doc, value in zip("1234", (-0.1, -0.9, -0.8, -0.2))}
    results = {
        ("front", "t"): result((1.0, 0.0, 0.0, 1.0), fast, confidence=signals),
        ("back", "t"): result((0.0, 1.0, 0.0, 1.0), slow),
        ("cascade", "t"): result((1.0, 1.0, 0.0, 1.0), slow, paths={"2": "fallback", "3": "fallback"}),
    }
    page = "\n".join(cascade_sections(config, results, tmp_path / "report.md"))
    assert "| t | 0.500 | 0.500 | 0.750 | 150% | 50% |" in page and page.split("\n")[6].endswith("| 0 |")
    assert "`mean_logprob` below -0.5, deferring 2 of 4 here" in page and "| mean_logprob | 0.500 |" in page
    assert (tmp_path / "report_cascade.svg").read_text().startswith("<svg")
    assert "different machines** (front: A, 2 cores (avx2); back: B" in page
    # An answer that is not of the deferral's form defers too, however sure: the cascade's own answers say which.
    form = {"model": SMOLLM2, "generation": {"signal": "mean_logprob", "below": -0.5, "answer_form": "whole_number"}}
    cascade(SMOLLM2, form).save(stack_file)
    answers = {"answers": {"1": "3.5", "2": "7", "3": "7", "4": "7"}}
    deferred = {"1": "fallback", "2": "fallback", "3": "fallback"}
    kept = results[("cascade", "t")]
    results[("cascade", "t")] = result((0.0, 1.0, 0.0, 1.0), slow, paths=deferred, **answers)
    page = "\n".join(cascade_sections(config, results, tmp_path / "report.md"))
    assert "below -0.5 or an answer not a whole_number, deferring 3 of 4 here" in page
    cascade(SMOLLM2, {"model": SMOLLM2, "generation": {"answer_form": "whole_number"}}).save(stack_file)
    page = "\n".join(cascade_sections(config, results, tmp_path / "report.md"))
    assert "(No curve: cascade defers by the answer's form alone, `whole_number`, not by a threshold.)" in page
    cascade(SMOLLM2, {"model": SMOLLM2, "generation": {"signal": "mean_logprob", "below": -0.5}}).save(stack_file)
    results[("cascade", "t")] = kept
    # A fallback that scored nothing: its share is a dash, not a division by zero.
    results[("back", "t")] = result((0.0, 0.0, 0.0, 0.0), slow)
    assert "| t | 0.500 | 0.000 | 0.750 | - | 50% |" in "\n".join(cascade_sections(config, results, tmp_path / "r.md"))
    results[("back", "t")] = result((0.0, 0.0, 0.0), slow)
    with pytest.raises(InputError, match="cascades.cascade: cascade, front and back were evaluated on different"):
        cascade_sections(config, results, tmp_path / "r.md")


# Running a cascade ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fslm_run_shows_which_answers_were_deferred_and_why(capsys, tmp_path):
    """On the embedded model: one prompt kept (its answer sure enough), one deferred to the fallback."""
    fallback = Stack(name="careful", stages=[answer_stage(SMOLLM2, "Answer in one short sentence.")], dtype="float32")
    fallback.save(tmp_path / "careful.yaml")
    front = cascade(
        SMOLLM2,
        {"stack": "careful.yaml", "generation": {"signal": "mean_logprob", "below": -0.5}},
        generation={"max_new_tokens": 24},
    )
    front.save(tmp_path / "cascade.yaml")
    prompts = ["What is the capital of France?", "Translate 'good morning' into Finnish."]
    code, out, err = run_fslm(capsys, "run", "--stack", tmp_path / "cascade.yaml", "--json", *prompts)
    assert code == 0, err
    traces = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    routes = [trace["routing"][-1] for trace in traces]
    assert [route["decision"] for route in routes] == ["keep", "defer"], routes
    kept, deferred = traces
    assert routes[0]["reason"].startswith("mean_logprob -0.") and routes[0]["reason"].endswith(">= -0.5: kept")
    assert "< -0.5: answered by" in routes[1]["reason"] and "careful.yaml" in routes[1]["reason"]
    assert [m["stage"] for m in kept["messages"]] == ["answer"] and kept["answer"] == kept["messages"][0]["text"]
    assert [m["stage"] for m in deferred["messages"]] == ["answer", FALLBACK_STAGE_PREFIX + "answer"]
    assert deferred["answer"] == deferred["messages"][1]["text"]
    assert all(m["min_logprob"] <= m["p10_logprob"] <= 0 for m in deferred["messages"])


def scored_documents(lm: FslmLM, limit: int = 4) -> dict:
    results = simple_evaluate(
        model=lm,
        tasks=["local_arc_easy"],
        task_manager=task_manager(["local_arc_easy"]),
        limit=limit,
        num_fewshot=0,
        bootstrap_iters=0,
        log_samples=True,
    )
    return {s["doc_id"]: [r[0][0] for r in s["resps"]] for s in results["samples"]["local_arc_easy"]}


def test_lm_eval_scoring_rescores_only_the_unsure_documents_with_the_fallback(
    tmp_path, tiny_model_id, tiny_adapters, benchmark_fixture_data
):
    stage = {"adapter": tiny_adapters[0]}
    alone = scored_documents(
        FslmLM(stack=Stack(name="s", stages=[answer_stage(tiny_model_id, **stage)], dtype="float32"))
    )
    big = Stack(name="big", stages=[answer_stage(tiny_model_id, adapter=tiny_adapters[1])], dtype="float32")
    fallback_alone = scored_documents(FslmLM(stack=big))
    assert alone != fallback_alone

    never = FslmLM(
        stack=cascade(tiny_model_id, {"model": "x", "scoring": {"signal": "choice_margin", "below": 0}}, **stage)
    )
    assert scored_documents(never) == alone  # a margin is never negative: nothing deferred, no fallback loaded
    assert "fallback" not in never.__dict__
    assert [doc["path"] for doc in never.document_traces("local_arc_easy")] == ["stack"] * 4

    margins = sorted(doc["signals"]["choice_margin"] for doc in never.document_traces("local_arc_easy"))
    below = (margins[1] + margins[2]) / 2  # the two least sure documents go to the fallback
    big.save(tmp_path / "big.yaml")
    deferring = {"stack": str(tmp_path / "big.yaml"), "scoring": {"signal": "choice_margin", "below": below}}
    lm = FslmLM(stack=cascade(tiny_model_id, deferring, **stage))
    scores = scored_documents(lm)
    documents = {doc["doc_id"]: doc for doc in lm.document_traces("local_arc_easy")}
    deferred = [doc_id for doc_id, doc in documents.items() if doc["path"] == "fallback"]
    assert len(deferred) == 2
    for doc_id, choices in scores.items():
        expected = fallback_alone if doc_id in deferred else alone
        assert choices == expected[doc_id]
        assert documents[doc_id]["reason"].startswith("choice_margin ")
    assert lm.task_cost("local_arc_easy")["deferred_documents"] == 2


def test_fslm_calibrate_measures_both_systems_and_writes_the_threshold(
    capsys, tmp_path, tiny_model_id, tiny_adapters, benchmark_fixture_data
):
    Stack(name="big", stages=[answer_stage(tiny_model_id, adapter=tiny_adapters[1])]).save(tmp_path / "big.yaml")
    front = cascade(
        tiny_model_id,
        # The answer form applies to generated answers: calibrating scored choices leaves it be.
        {
            "stack": "big.yaml",
            "scoring": {"signal": "choice_margin_raw", "below": 9.0},
            "generation": {"answer_form": "number"},
        },
        adapter=tiny_adapters[0],
    )
    front.save(tmp_path / "cascade.yaml")
    commented = "# why this fallback\n" + (tmp_path / "cascade.yaml").read_text().replace(
        "fallback:", "fallback:  # bigger"
    )
    (tmp_path / "cascade.yaml").write_text(commented)
    output = tmp_path / "calibration"
    arguments = [
        "calibrate",
        tmp_path / "cascade.yaml",
        "--tasks",
        "local_arc_easy",
        "--documents",
        "local_arc_easy=0-6",
        "--rate",
        "0.5",
        "--output",
        output,
        "--batch-size",
        "4",
    ]
    code, out, err = run_fslm(capsys, *arguments)
    assert code == 0, err
    assert "(1/2) stack on local_arc_easy: 6 of 6 documents" in out and "chosen: defer when" in out
    page = (output / "calibration.md").read_text()
    assert "![accuracy against documents deferred](calibration.svg)" in page and "| choice_margin |" in page
    assert (output / "calibration.svg").read_text().startswith("<svg")
    threshold = load_stack(tmp_path / "cascade.yaml").fallback.scoring
    assert threshold != front.fallback.scoring and threshold.below != 9.0
    assert "wrote fallback.scoring" in out
    lines = (tmp_path / "cascade.yaml").read_text().splitlines()
    assert lines[0] == "# why this fallback" and "fallback:  # bigger" in lines  # edited in place
    # Again: both evaluations are read back, not rerun, and the same threshold comes out.
    code, again, _ = run_fslm(capsys, *arguments)
    assert code == 0 and again.count("done earlier") == 2
    assert load_stack(tmp_path / "cascade.yaml").fallback.scoring == threshold
    assert load_stack(tmp_path / "cascade.yaml").fallback.generation.answer_form == "number"


def test_calibrate_needs_a_fallback_and_one_target(capsys, tmp_path, tiny_model_id):
    Stack(name="plain", stages=[answer_stage(tiny_model_id)]).save(tmp_path / "plain.yaml")
    code, _, err = run_fslm(
        capsys, "calibrate", tmp_path / "plain.yaml", "--tasks", "t", "--rate", "0.2", "--output", tmp_path / "out"
    )
    assert code == 2 and "has no fallback" in err
    code, _, err = run_fslm(capsys, "calibrate", tmp_path / "plain.yaml", "--tasks", "t", "--output", tmp_path)
    assert code == 2 and "give one target" in err
    code, _, err = run_fslm(
        capsys,
        "calibrate",
        tmp_path / "plain.yaml",
        "--tasks",
        "t",
        "--rate",
        "0.2",
        "--documents",
        "t=5-2",
        "--output",
        tmp_path,
    )
    assert code == 2 and "--documents" in err


def test_calibration_keeps_the_answer_form_and_needs_recorded_answers():
    from fslm_core.experiment.calibration import Calibration, Costs, CurvePoint, failing_form
    from fslm_core.stage_settings import Deferral

    result = {"scores": {"1": 1.0, "2": 0.0, "3": 0.0}, "answers": {"1": "16", "2": "2.5"}}
    assert failing_form(result, "whole_number", "here") == {"2", "3"}  # no answer is not a whole number
    assert failing_form({"scores": {"1": 1.0}}, None, "here") == set()
    with pytest.raises(InputError, match="here: the result records no answers"):
        failing_form({"scores": {"1": 1.0}}, "number", "here")
    chosen = CurvePoint(-0.25, 3, 0.5)
    calibration = Calibration([], {}, Costs(1.0, 2.0), "mean_logprob", chosen, "t", answer_form="whole_number")
    assert calibration.deferral == Deferral(signal="mean_logprob", below=-0.25, answer_form="whole_number")
