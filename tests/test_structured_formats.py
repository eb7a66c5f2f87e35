"""Message formats enforced while decoding, on a tiny random Llama: a random model never writes a list or
JSON by chance, so whatever parses here parses because decoding held it to its format."""

import json

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from fslm_core import GenerationSettings, Stack, Stage, load_stack
from fslm_core.cli import cli
from fslm_core.errors import DeclarationError, StackFileError, StageOutputError
from fslm_core.runtime import bind_stack, check_stack, run_stack, stage_input
from fslm_core.runtime.listener import RunListener

PROMPTS = ["What is the capital of France?", "Name three primary colors.", "What is 12 + 7?"]
LONG_ENOUGH = GenerationSettings(max_new_tokens=20)
# Bounded lengths: the longest output the schema allows (escapes included) fits the stage's token budget.
FACTS_SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "maxLength": 6},
        "facts": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2},
    },
    "required": ["topic", "facts"],
    "additionalProperties": False,
}
JSON_BUDGET = GenerationSettings(max_new_tokens=120)


def stage(name, model, adapter=None, **fields):
    fields.setdefault("generation", LONG_ENOUGH)
    return Stage(name=name, model=model, adapter=adapter, instruction=f"Do the {name} step.", **fields)


@pytest.mark.parametrize("format_name", ["list", "key-value"])
def test_an_enforced_line_format_parses_on_a_random_model_and_the_unenforced_one_does_not(
    format_name, tiny_model_id, tiny_adapters, pool
):
    # A key may take 24 tokens before its value starts: room for one whole line.
    budget = GenerationSettings(max_new_tokens=32)
    stack = Stack(
        name="s", stages=[stage("recall", tiny_model_id, tiny_adapters[0], format=format_name, generation=budget)]
    )

    enforced = run_stack(stack, PROMPTS, pool=pool)
    asked_only = run_stack(stack, PROMPTS, pool=pool, enforce_formats=False)

    for trace in enforced:
        message = trace.message("recall")
        assert message.parse_error is None and message.fields, message.text
    assert all(trace.message("recall").parse_error for trace in asked_only)


def test_an_enforced_json_stage_writes_objects_its_schema_accepts(tiny_model_id, tiny_adapters, pool):
    stack = Stack(
        name="s",
        stages=[
            stage(
                "facts",
                tiny_model_id,
                tiny_adapters[1],
                format="json",
                json_schema=FACTS_SCHEMA,
                generation=JSON_BUDGET,
            )
        ],
    )
    for trace in run_stack(stack, PROMPTS, pool=pool):
        message = trace.message("facts")
        assert message.parse_error is None, message.text
        value = json.loads(message.text)
        assert set(value) == {"topic", "facts"} and len(value["topic"]) <= 6
        assert isinstance(value["facts"], list) and all(isinstance(fact, str) for fact in value["facts"])
        assert message.fields == value
        assert message.mean_logprob is not None and message.mean_logprob <= 0.0  # the model's own, not the mask's


def test_a_stage_can_turn_enforcement_off_for_itself(tiny_model_id, pool):
    free = Stack(name="s", stages=[stage("recall", tiny_model_id, format="list", enforce_format=False)])
    held = Stack(name="s", stages=[stage("recall", tiny_model_id, format="list")])

    unenforced = run_stack(free, PROMPTS, pool=pool)

    assert [t.answer for t in unenforced] == [
        t.answer for t in run_stack(held, PROMPTS, pool=pool, enforce_formats=False)
    ]
    assert [t.answer for t in unenforced] != [t.answer for t in run_stack(held, PROMPTS, pool=pool)]


def two_stages(model, adapters, on_parse_error="keep-text"):
    return Stack(
        name="s",
        stages=[
            stage("recall", model, adapters[0], format="list", on_parse_error=on_parse_error),
            stage("answer", model, adapters[1], reads=["recall"], generation=GenerationSettings(max_new_tokens=6)),
        ],
    )


def test_unparsed_output_is_recorded_with_its_raw_text_and_the_next_stage_still_runs(
    tiny_model_id, tiny_adapters, pool
):
    stack = two_stages(tiny_model_id, tiny_adapters)
    traces = run_stack(stack, PROMPTS, pool=pool, enforce_formats=False)
    bound = bind_stack(stack, pool=pool)

    for trace in traces:
        recall = trace.message("recall")
        assert recall.parse_error.startswith("not list output") and recall.fields is None
        assert recall.text and recall.completion_tokens > 0
        assert trace.message("answer").completion_tokens > 0 and trace.answer == trace.message("answer").text
        # keep-text: the reader sees the raw text
        assert recall.text in stage_input(stack.stages[1], trace, bound.formats, None, bound.empty_when_unparsed)


def test_on_parse_error_empty_hides_the_raw_text_from_readers_but_not_from_the_trace(
    tiny_model_id, tiny_adapters, pool
):
    stack = two_stages(tiny_model_id, tiny_adapters, on_parse_error="empty")
    traces = run_stack(stack, PROMPTS, pool=pool, enforce_formats=False)
    bound = bind_stack(stack, pool=pool)

    for trace in traces:
        recall = trace.message("recall")
        assert recall.parse_error and recall.text
        assert recall.text not in stage_input(stack.stages[1], trace, bound.formats, None, bound.empty_when_unparsed)
        assert trace.message("answer") is not None


def test_on_parse_error_fail_stops_the_run_naming_the_stage(tiny_model_id, tiny_adapters, pool):
    stack = two_stages(tiny_model_id, tiny_adapters, on_parse_error="fail")
    with pytest.raises(StageOutputError, match="stage 'recall' wrote text its list format cannot parse"):
        run_stack(stack, PROMPTS, pool=pool, enforce_formats=False)
    assert all(trace.message("recall").parse_error is None for trace in run_stack(stack, PROMPTS, pool=pool))


def test_json_that_parses_but_breaks_the_schema_is_a_parse_error_with_its_fields_kept(tiny_model_id, pool):
    stack = Stack(name="s", stages=[stage("facts", tiny_model_id, format="json", json_schema=FACTS_SCHEMA)])
    item = bind_stack(stack, pool=pool).stages["facts"]
    assert item.format.check({"topic": "x", "facts": ["a", 3]}, FACTS_SCHEMA) == "$.facts[1]: expected string, got int"
    assert item.format.check({"facts": []}, FACTS_SCHEMA) == "$: missing required key 'topic'"
    assert item.format.check({"topic": "x", "facts": [], "more": 1}, FACTS_SCHEMA) == "$: unexpected key 'more'"
    assert item.format.check({"topic": True, "facts": []}, FACTS_SCHEMA) == "$.topic: expected string, got bool"
    assert item.format.check({"topic": "x", "facts": []}, FACTS_SCHEMA) is None


def test_a_free_and_a_structured_stage_share_one_wave_and_the_free_row_is_unchanged(
    tiny_model_id, tiny_adapters, pool, monkeypatch
):
    free = stage("interpret", tiny_model_id, tiny_adapters[0])
    structured = stage("recall", tiny_model_id, tiny_adapters[1], format="list")
    final = stage(
        "answer", tiny_model_id, reads=["interpret", "recall"], generation=GenerationSettings(max_new_tokens=2)
    )
    # Exact equality between batch compositions holds in float32; bf16 rounds each composition differently.
    alone = run_stack(Stack(name="alone", stages=[free], dtype="float32"), PROMPTS, pool=pool)
    backend = bind_stack(Stack(name="alone", stages=[free], dtype="float32"), pool=pool).stages["interpret"].backend
    calls = []
    original = backend.generate

    def counted(prompts, adapters, *args, **kwargs):
        calls.append(kwargs.get("constraints"))
        return original(prompts, adapters, *args, **kwargs)

    monkeypatch.setattr(backend, "generate", counted)
    wave = Stack(name="wave", stages=[free, structured, final], router="parallel", dtype="float32")
    traces = run_stack(wave, PROMPTS, pool=pool)

    assert len(calls) == 2 and [c is None for c in calls[0]] == [True] * 3 + [False] * 3  # one mixed batch
    for trace, lone in zip(traces, alone):
        assert trace.message("interpret").text == lone.message("interpret").text
        assert trace.message("interpret").parse_error is None and trace.message("interpret").fields is None
        assert trace.message("recall").fields["items"]


class StreamRecorder(RunListener):
    def __init__(self):
        self.texts: dict[int, list[str]] = {}

    def streams(self, stage):
        return stage.name == "recall"

    def on_text(self, index, stage, text):
        self.texts.setdefault(index, []).append(text)
        return True


def test_a_constrained_stage_streams_growing_prefixes_of_its_parsed_text(tiny_model_id, tiny_adapters, pool):
    stack = Stack(name="s", stages=[stage("recall", tiny_model_id, tiny_adapters[2], format="list")])
    plain = run_stack(stack, PROMPTS, pool=pool)
    heard = StreamRecorder()
    traces = run_stack(stack, PROMPTS, pool=pool, listener=heard)

    assert [t.answer for t in traces] == [t.answer for t in plain]
    for index, trace in enumerate(traces):
        texts = heard.texts[index]
        assert texts[0].startswith("-")
        for shorter, longer in zip(texts, texts[1:]):
            assert longer.startswith(shorter)
        assert trace.answer.startswith(texts[-1]) and trace.message("recall").fields["items"]


def test_a_schema_that_is_not_an_object_is_refused_naming_the_field(tiny_model_id):
    with pytest.raises(ValidationError, match="json_schema") as caught:
        stage("facts", tiny_model_id, format="json", json_schema={"type": "array"})
    assert "must describe a JSON object" in str(caught.value)


def test_a_schema_in_a_stack_file_is_checked_with_its_place_in_the_file(tiny_model_id, tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_text(
        "name: s\nstages:\n  - name: facts\n    model: m\n    instruction: Do it.\n    format: json\n"
        "    json_schema: {type: object, properties: [topic]}\n"
    )
    with pytest.raises(StackFileError, match=r"stages\.0\.json_schema.*properties must be a mapping"):
        load_stack(path)


def test_a_schema_on_a_format_that_takes_none_is_refused_naming_the_field(tiny_model_id):
    stack = Stack(name="s", stages=[stage("recall", tiny_model_id, format="list", json_schema={"type": "object"})])
    with pytest.raises(DeclarationError, match=r"stages\.0\.json_schema: format 'list' takes no schema"):
        check_stack(stack)


def test_a_schema_decoding_cannot_enforce_is_refused_before_any_model_loads(tiny_model_id):
    broken = {"type": "object", "properties": {"topic": {"type": "strin"}}}
    stack = Stack(name="s", stages=[stage("facts", tiny_model_id, format="json", json_schema=broken)])
    with pytest.raises(DeclarationError, match=r"stages\.0\.json_schema: not a schema decoding can enforce.*strin"):
        check_stack(stack)


def test_fslm_run_no_enforce_formats_only_asks_for_the_format(tiny_model_id, tmp_path, monkeypatch):
    monkeypatch.setenv("FSLM_CACHE_DIR", str(tmp_path))
    stack_file = Stack(name="s", stages=[stage("recall", tiny_model_id, format="list")]).save(tmp_path / "stack.yaml")
    runner = CliRunner()
    command = ["run", "--stack", str(stack_file), "--json", "--cache", PROMPTS[0]]

    enforced = json.loads(runner.invoke(cli, command).stdout)["messages"][0]
    asked_only = json.loads(runner.invoke(cli, [*command, "--no-enforce-formats"]).stdout)["messages"][0]

    assert enforced["parse_error"] is None and enforced["fields"]["items"]
    # The stage cache tells the two apart: the unenforced run wrote its own output, not the enforced one's.
    assert not asked_only["cached"] and asked_only["parse_error"] and asked_only["text"] != enforced["text"]


def test_a_sampling_stage_is_held_to_its_format_too(tiny_model_id, pool):
    sampled = GenerationSettings(max_new_tokens=20, temperature=1.0, top_p=0.9)
    stack = Stack(name="s", stages=[stage("recall", tiny_model_id, format="list", generation=sampled)])
    assert all(trace.message("recall").fields for trace in run_stack(stack, PROMPTS, pool=pool, seed=3))


def test_greedy_masks_skip_rows_whose_best_token_is_allowed_and_choose_what_full_masks_choose(tiny_model_dir):
    import torch
    from transformers import AutoTokenizer

    from fslm_core.api import ListFormat
    from fslm_core.runtime.format_masks import FormatCompiler

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    compiler = FormatCompiler(tokenizer, [tokenizer.eos_token_id])
    held = [ListFormat().constraint(), None, ListFormat().constraint()]
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        scores = torch.randn(3, len(tokenizer), generator=generator)
        dash = tokenizer.convert_tokens_to_ids("-")
        scores[2, dash] = 100.0  # row 2's best token is allowed: greedy leaves its scores alone
        full, greedy = scores.clone(), scores.clone()
        compiler.masks(held).apply([0, 1, 2], full)
        compiler.masks(held).apply([0, 1, 2], greedy, greedy=True)
        assert torch.equal(full.argmax(-1), greedy.argmax(-1))
        assert torch.equal(greedy[1:], scores[1:]) and torch.isinf(full[2]).any()
