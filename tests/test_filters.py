"""Teacher notes parsing and the checks that keep bad targets out of training."""

from __future__ import annotations

import json

import pytest

from fslm_core.api import StageRecipe, TeacherNotes
from fslm_core.api.decompositions import Decomposition
from fslm_core.distillation import DistilledExample
from fslm_core.distillation.role_checks import (
    filter_examples,
    is_list,
    restates,
    role_problem,
    target_problem,
    tidy_target,
)
from fslm_core.errors import DeclarationError
from fslm_core.plugins import get_registry

NOTES = get_registry().decomposition("fslm-paper").teacher_notes


def test_notes_reply_splits_into_one_target_per_stage():
    reply = (
        "RESTATEMENT: The task asks for the boiling point of water in Fahrenheit.\n\n"
        "KEY FACTS:\n- Water boils at 100 C.\n- F = C x 9/5 + 32.\n\n"
        "DRAFT: 100 x 9/5 + 32 = 212.\n\nFinal answer: 212 F"
    )
    assert NOTES.parse(reply) == {
        "interpret": "The task asks for the boiling point of water in Fahrenheit.",
        "recall": "- Water boils at 100 C.\n- F = C x 9/5 + 32.",
        "reason": "100 x 9/5 + 32 = 212.",
    }
    # Labels in markdown bold still count; a missing section is absent, not empty.
    assert NOTES.parse("RESTATEMENT: The task asks x.\n**DRAFT:** y") == {
        "interpret": "The task asks x.",
        "reason": "y",
    }


def test_notes_show_a_cut_reference_and_name_known_stages_only():
    message = NOTES.user_message("Write an essay.", "word " * 500)
    assert message.startswith("Task:\nWrite an essay.\n\nFinal answer:\nword") and message.endswith(" ...")
    assert len(message) < NOTES.reference_chars + 60
    with pytest.raises(DeclarationError, match="unknown stages"):
        Decomposition(
            name="bad",
            description="",
            stages=(StageRecipe(name="answer", instruction="x"),),
            teacher_notes=TeacherNotes(instruction="x", sections=(("nope", "NOPE"),)),
        )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("The task asks which city is the largest in the US.", None),
        ("New York City is the answer.", "answers instead of restating"),
        ("No.", "answers instead of restating"),
        ("The task asks " + "to name a city " * 20, "too long to be a restatement"),
    ],
)
def test_restatement_check_catches_answers(text, problem):
    assert restates(text, "Name the largest city in the US.", "New York City.") == problem


def test_targets_are_tidied_to_their_role():
    assert tidy_target("- a\n* b\n1. c\nnot an item\n- a", ("is-list",)) == "- a\n- b\n- c"
    assert tidy_target("- a\n- b\n- half an it", ("is-list",), cut_off=True) == "- a\n- b"
    assert (
        tidy_target("Step 1. Add 2 and 2. The sum is 4. Then", (), cut_off=True) == "Step 1. Add 2 and 2. The sum is 4."
    )
    assert tidy_target("The task asks for a list (of 3). It is x.", ("restates",)) == "The task asks for a list (of 3)."


def test_list_check_and_generic_target_problems():
    assert is_list("- one\n- two") is None and is_list("1. one\n2) two") is None
    assert is_list("just a sentence") == "not a list" and is_list("- one\nthen prose") == "not a list"
    assert is_list("- a single fact") is None
    prompt = "Explain how entrepreneurs utilize crowdfunding to raise money for projects."
    assert target_problem("", prompt, "", ()) == "empty"
    assert target_problem("", prompt, "", (), hit_token_limit=True).startswith("cut off")
    assert target_problem("explain how entrepreneurs utilize crowdfunding to raise money", prompt, "", ()) == (
        "copies the prompt"
    )
    repeated = "The cost starts at 800 dollars.\nThe cost starts at 800 dollars."
    assert target_problem(repeated, prompt, "", ()) == "repeats itself"
    assert role_problem("- a\n- b", prompt, "", ("is-list",)) is None
    assert role_problem("  ", prompt, "", ("is-list",)) == "empty"


def test_filter_drops_an_example_for_any_bad_intermediate_target_and_counts_reasons():
    decomposition = get_registry().decomposition("fslm-paper")

    def example(example_id, interpret, recall="- a fact\n- another fact", reason="So it is x.", limit=False):
        targets = {"interpret": interpret, "recall": recall, "reason": reason, "answer": "Paris."}
        limits = {"interpret": False, "recall": False, "reason": limit, "answer": False}
        return DistilledExample(example_id, "What is the capital of France?", targets, {}, limits)

    examples = [
        example(0, "The task asks for the capital of France. It is Paris."),
        example(1, "Paris is the capital."),
        example(2, "The task asks for the capital of France.", recall="Paris"),
        example(3, "The task asks for the capital of France.", reason="The capital is", limit=True),
        example(4, "The task asks for the capital of France.", reason="It is Paris. Paris has", limit=True),
    ]
    report = filter_examples(examples, decomposition)
    assert [e.example_id for e in report.kept] == [0, 4]
    assert [e.example_id for e in report.dropped] == [1, 2, 3]
    # Kept targets are tidied: a restatement keeps its first sentence, a cut-off text its finished ones.
    assert report.kept[0].targets["interpret"] == "The task asks for the capital of France."
    assert report.kept[1].targets["reason"] == "It is Paris."
    assert report.as_dict()["reasons"] == {
        "interpret": {"answers instead of restating": 1},
        "recall": {"not a list": 1},
        "reason": {"cut off at the teacher's token limit": 1},
    }
    assert "dropped 3" in report.render()


def test_filtered_copy_of_a_distillation_folder(tiny_model_id, tmp_path, capsys):
    from pathlib import Path

    from fslm_core import distill, load_distilled
    from fslm_core.cli import main
    from fslm_core.distillation import DistillConfig, filter_distilled

    alpaca = Path(__file__).parent / "fixtures" / "alpaca_tiny.json"
    config = DistillConfig(max_new_tokens=6, batch_size=8)
    distill(alpaca, tmp_path / "notes", config, teacher=tiny_model_id, progress=False)
    # A random teacher writes no KEY FACTS or DRAFT section: every example is dropped, with its reasons.
    main(["filter", str(tmp_path / "notes"), "--output", str(tmp_path / "filtered"), "--json"])
    counts = json.loads(capsys.readouterr().out)
    assert counts["kept"] == 0 and counts["dropped"] == 6
    assert counts["reasons"]["recall"] == {"empty": 6}

    kept_all = filter_distilled(tmp_path / "notes", tmp_path / "unchecked", check=False)
    assert len(kept_all.kept) == 6
    copy = load_distilled(tmp_path / "unchecked")
    assert copy.manifest["filter"]["checked"] is False and copy.manifest["examples"] == 6
    original = {e.example_id: e.targets for e in load_distilled(tmp_path / "notes").examples()}
    assert {e.example_id: e.targets for e in copy.examples()} == original


PROMPT = "What is the capital of France?"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Bananas are yellow.", "is not about the request"),
        ("What is the capital of France?", "copies the prompt"),
        ("The answer to this question is France.", "answers instead of restating"),
        ("The task asks for the capital city of France.", None),
    ],
)
def test_a_restatement_must_be_about_the_request_and_not_copy_or_answer_it(text, problem):
    assert role_problem(text, PROMPT, "Paris", ["restates"]) == problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("What is the capital of France?", "copies the prompt"),
        ("The task asks for the capital of France.", "restates the request instead of answering"),
        ("I'm sorry, I cannot answer that.", "refuses instead of answering"),
        ("Which country do you mean?", "asks instead of answering"),
        ("The capital of France is Paris.", None),
        ("Paris is the capital of France.", None),  # echoes the question, but says what it did not
        ("Paris.", None),
    ],
)
def test_an_answer_stage_must_answer(text, problem):
    assert role_problem(text, PROMPT, "Paris", ["answers"]) == problem


def test_the_paper_decomposition_checks_its_answer_stage():
    from fslm_core.plugins import get_registry

    checks = {recipe.name: recipe.checks for recipe in get_registry().decomposition("fslm-paper").stages}
    assert checks["answer"] == ("answers",)
