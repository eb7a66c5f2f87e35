"""Routers on a tiny random Llama: early exit, conditional stages, dispatch to sub-stacks, all batched."""

import pytest
from pydantic import ValidationError

from fslm_core import GenerationSettings, Stack, Stage
from fslm_core.declarations import Condition, Dispatch
from fslm_core.errors import DeclarationError
from fslm_core.runtime import run_stack

PROMPTS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "What is 12 + 7?",
    "Who wrote Romeo and Juliet?",
    "Give me 2 synonyms for happy.",
    "How many legs does a spider have?",
]
SHORT = GenerationSettings(max_new_tokens=6)


def stage(name, model, adapter=None, reads=(), **fields):
    return Stage(
        name=name, model=model, adapter=adapter, reads=reads, instruction=f"Do {name}.", generation=SHORT, **fields
    )


def linear(model, adapters, **first):
    return [
        stage("first", model, adapters[0], **first),
        stage("second", model, adapters[1], reads=("first",)),
        stage("third", model, adapters[2], reads=("second",)),
    ]


def test_early_exit_ends_confident_inputs_and_leaves_the_others_as_the_linear_stack_runs_them(
    tiny_model_id, tiny_adapters, pool
):
    plain = run_stack(Stack(name="plain", stages=linear(tiny_model_id, tiny_adapters)), PROMPTS, pool=pool)
    confidences = sorted(trace.message("first").mean_logprob for trace in plain)
    threshold = (confidences[2] + confidences[3]) / 2  # half the inputs are at least this sure
    exits = Condition(stage="first", min_mean_logprob=threshold)
    stack = Stack(name="exit", router="early-exit", stages=linear(tiny_model_id, tiny_adapters, exit_if=exits))

    traces = run_stack(stack, PROMPTS, pool=pool, batch_size=8)

    left = [trace for trace in traces if trace.routing]
    stayed = [index for index, trace in enumerate(traces) if not trace.routing]
    assert len(left) == 3 and len(stayed) == 3
    assert sum(len(trace.messages) for trace in traces) == 3 * 1 + 3 * 3 < len(PROMPTS) * 3
    for trace in left:
        (decision,) = trace.routing
        assert (decision.stage, decision.decision, decision.router) == ("first", "exit", "early-exit")
        assert trace.answer == trace.message("first").text and trace.message("second") is None
    for index in stayed:
        assert traces[index].answer == plain[index].answer
        assert [m.text for m in traces[index].messages] == [m.text for m in plain[index].messages]
        assert traces[index].message("second").batch_size == 3  # the inputs still in run as one batch


def test_a_conditional_stage_runs_only_where_its_condition_holds(tiny_model_id, tiny_adapters, pool):
    digits = Condition(stage="prompt", matches=r"\d")
    stack = Stack(
        name="cond",
        router="conditional",
        stages=[
            stage("check", tiny_model_id, tiny_adapters[0], run_if=digits),
            stage("answer", tiny_model_id, tiny_adapters[1], reads=("check",), template="{prompt}\n{check}"),
        ],
    )
    traces = run_stack(stack, PROMPTS, pool=pool)
    for trace in traces:
        has_digit = any(character.isdigit() for character in trace.prompt)
        assert (trace.message("check") is not None) == has_digit
        assert trace.message("answer") is not None
        if not has_digit:
            assert [(d.stage, d.decision) for d in trace.routing] == [("check", "skipped")]
            assert "run_if does not hold" in trace.routing[0].reason


def splitting_label(texts: list[str]) -> str:
    """A piece of text some of ``texts`` hold and some do not (the tiny model writes arbitrary characters)."""
    for length in range(1, 7):
        for text in texts:
            for start in range(len(text) - length + 1):
                piece = text[start : start + length].lower()
                holding = sum(piece in other.lower() for other in texts)
                if piece.strip() and 0 < holding < len(texts):
                    return piece
    raise AssertionError(f"no piece of text splits {texts!r}")


def test_dispatch_sends_each_input_down_one_route_in_one_batched_run(tiny_model_id, tiny_adapters, pool):
    classify = stage("classify", tiny_model_id, tiny_adapters[0])
    written = run_stack(Stack(name="c", stages=[classify]), PROMPTS, pool=pool)
    texts = [trace.answer for trace in written]
    label = splitting_label(texts)
    on_a = [index for index, text in enumerate(texts) if label.lower() in text.lower()]
    stack = Stack(
        name="dispatched",
        router="dispatch",
        dispatch=Dispatch(
            classifier="classify", routes={label: ("route_a",), "never-written": ("route_b",)}, default="never-written"
        ),
        stages=[
            classify,
            stage("route_a", tiny_model_id, tiny_adapters[1], reads=("classify",)),
            stage("route_b", tiny_model_id, tiny_adapters[2], reads=("classify",)),
            stage("answer", tiny_model_id, tiny_adapters[3], reads=("route_a", "route_b")),
        ],
    )
    traces = run_stack(stack, PROMPTS, pool=pool, batch_size=8)

    assert on_a and len(on_a) < len(PROMPTS)
    for index, trace in enumerate(traces):
        went_a = index in on_a
        assert (trace.message("route_a") is not None, trace.message("route_b") is not None) == (went_a, not went_a)
        dispatch = trace.routing[0]
        assert (dispatch.stage, dispatch.decision) == ("classify", "dispatch")
        assert repr(label if went_a else "never-written") in dispatch.reason
        assert trace.answer == trace.message("answer").text
    batch_a = {trace.message("route_a").batch_size for index, trace in enumerate(traces) if index in on_a}
    assert batch_a == {len(on_a)}  # one batch per route, not one call per input


def test_a_router_that_does_not_apply_a_declared_rule_is_refused_naming_the_field(tiny_model_id, pool):
    stages = [stage("one", tiny_model_id, exit_if=Condition(stage="one", contains="done")), stage("two", tiny_model_id)]
    with pytest.raises(
        DeclarationError, match=r"stages\.0\.exit_if: router 'sequential' does not apply exit_if.*early-exit"
    ):
        run_stack(Stack(name="s", stages=stages), PROMPTS[:1], pool=pool)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda m: [stage("a", m, run_if=Condition(stage="b", contains="x")), stage("b", m)],
            r"stages\.0\.run_if\.stage",
        ),
        (lambda m: [stage("a", m, exit_if=Condition(stage="a"))], "at least one test"),
        (lambda m: [stage("a", m, run_if=Condition(stage="prompt", matches="("))], "not a regular expression"),
    ],
    ids=["condition-on-a-later-stage", "condition-without-test", "bad-regex"],
)
def test_bad_routing_declarations_name_the_field(tiny_model_id, build, message):
    with pytest.raises(ValidationError, match=message):
        Stack(name="bad", stages=build(tiny_model_id))


def test_a_dispatch_route_must_name_stages_after_its_classifier(tiny_model_id):
    with pytest.raises(ValidationError, match=r"dispatch\.routes\.x: 'a' is not a stage after the classifier"):
        Stack(
            name="bad",
            router="dispatch",
            dispatch=Dispatch(classifier="b", routes={"x": ("a",), "y": ("c",)}),
            stages=[stage("a", tiny_model_id), stage("b", tiny_model_id), stage("c", tiny_model_id)],
        )
