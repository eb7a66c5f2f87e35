"""The engine on a tiny random Llama: batching, shared bases, per-stage adapters, traces."""

import pytest
from tiny_stacks import written

from fslm_core import GenerationSettings, Stack, Stage, Trace
from fslm_core.api import ListFormat, ParallelRouter, Router
from fslm_core.errors import AdapterError, InputError, UnknownNameError
from fslm_core.runtime import bind_stack, stage_input
from fslm_core.runtime.decoding import cut_at_stop

PROMPTS = ["What is the capital of France?", "Name three primary colors.", "What is 12 + 7?"]
SHORT = GenerationSettings(max_new_tokens=6)


def make_stage(name, model, adapter=None, reads=(), **fields):
    return Stage(
        name=name,
        model=model,
        adapter=adapter,
        reads=reads,
        instruction=f"Do the {name} step.",
        generation=fields.pop("generation", SHORT),
        **fields,
    )


def count_generate_calls(pool, monkeypatch):
    """Wrap each loaded backend's generate to count the batched calls the engine makes."""
    calls = []
    for backend in pool.loaded():
        original = backend.generate

        def counted(prompts, adapters, *args, _original=original, **kwargs):
            calls.append(list(adapters))
            return _original(prompts, adapters, *args, **kwargs)

        monkeypatch.setattr(backend, "generate", counted)
    return calls


def test_run_returns_one_trace_per_prompt_with_every_message_in_order(tiny_model_id, pool):
    stack = Stack(
        name="chain", stages=[make_stage("first", tiny_model_id), make_stage("second", tiny_model_id, reads=["first"])]
    )
    traces = stack.run(PROMPTS, pool=pool)
    assert [trace.prompt for trace in traces] == PROMPTS
    for trace in traces:
        assert [m.stage for m in trace.messages] == ["first", "second"]
        assert trace.answer == trace.messages[-1].text
        assert all(0 < m.completion_tokens <= 6 and m.prompt_tokens > 0 for m in trace.messages)
        assert all(m.batch_size == 3 and m.latency_s > 0 for m in trace.messages)
    assert Trace.model_validate_json(traces[0].to_json()) == traces[0]


def test_stages_on_one_model_id_share_one_loaded_base_with_one_adapter_each(tiny_model_id, tiny_adapters, pool):
    stages = [
        make_stage(f"s{i}", tiny_model_id, adapter=tiny_adapters[i], reads=[f"s{i - 1}"] if i else []) for i in range(4)
    ]
    Stack(name="four", stages=stages).run(PROMPTS[:1], pool=pool)
    assert len(pool.loaded()) == 1
    assert len(pool.loaded()[0].adapter_names) == 4


def test_adapters_change_the_output_and_a_stage_without_adapter_runs_the_plain_base(tiny_model_id, tiny_adapters, pool):
    def answer_of(adapter):
        stack = Stack(name="one", stages=[make_stage("only", tiny_model_id, adapter=adapter)])
        return [t.answer for t in stack.run(PROMPTS, pool=pool)]

    plain_before = answer_of(None)
    with_adapter = answer_of(tiny_adapters[0])
    plain_after = answer_of(None)  # the base is now a PeftModel: adapters must be switched off
    assert with_adapter != plain_before
    assert plain_after == plain_before


def test_a_wave_of_stages_runs_as_one_mixed_adapter_batch_with_the_same_results(
    tiny_model_id, tiny_adapters, pool, monkeypatch
):
    stages = [
        make_stage("a", tiny_model_id, adapter=tiny_adapters[0]),
        make_stage("b", tiny_model_id, adapter=tiny_adapters[1]),
        make_stage("c", tiny_model_id),
        make_stage("final", tiny_model_id, adapter=tiny_adapters[2], reads=["a", "b", "c"]),
    ]
    # Exact equality between batch compositions holds in float32; bf16 rounds each composition differently.
    parallel = Stack(name="p", router="parallel", stages=stages, dtype="float32")
    bind_stack(parallel, pool=pool)
    calls = count_generate_calls(pool, monkeypatch)
    mixed = parallel.run(PROMPTS, pool=pool, batch_size=16)
    assert len(calls) == 2  # wave {a, b, c} in one call, then the final stage
    assert len(set(calls[0])) == 3 and None in calls[0]

    sequential = Stack(name="s", router="sequential", stages=stages, dtype="float32").run(PROMPTS, pool=pool)
    assert len(calls) == 2 + 4
    for left, right in zip(mixed, sequential):
        assert [m.text for m in left.messages] == [m.text for m in right.messages]


def test_results_do_not_depend_on_batch_size(tiny_model_id, tiny_adapters, pool):
    stack = Stack(
        name="b",
        stages=[make_stage("x", tiny_model_id, adapter=tiny_adapters[3]), make_stage("y", tiny_model_id, reads=["x"])],
    )
    confidences = ("mean_logprob", "min_logprob", "p10_logprob")
    varies = {"messages": {"__all__": {"latency_s", "batch_size", *confidences}}}
    one_run, two_run = stack.run(PROMPTS, pool=pool, batch_size=1), stack.run(PROMPTS, pool=pool, batch_size=2)
    assert [t.model_dump(exclude=varies) for t in one_run] == [t.model_dump(exclude=varies) for t in two_run]
    # Padding changes the sums' rounding, not the tokens: the confidences agree closely.
    for left, right in zip(one_run, two_run):
        for a, b in zip(left.messages, right.messages):
            for name in confidences:
                assert getattr(a, name) == pytest.approx(getattr(b, name), abs=1e-3)


def test_generation_stops_at_stop_strings(tiny_model_id, pool):
    free = Stack(name="f", stages=[make_stage("g", tiny_model_id, generation=GenerationSettings(max_new_tokens=12))])
    text = free.run(PROMPTS[:1], pool=pool)[0].answer
    assert len(text) > 4
    stop = text[2:4]
    stopped = Stack(
        name="s", stages=[make_stage("g", tiny_model_id, generation=GenerationSettings(max_new_tokens=12, stop=[stop]))]
    )
    assert stopped.run(PROMPTS[:1], pool=pool)[0].answer == text[: text.index(stop)].strip()


def test_cut_at_stop_uses_the_earliest_stop():
    assert cut_at_stop("abc\n\ndef###", ["###", "\n\n"]) == "abc"
    assert cut_at_stop("abc", []) == "abc"


def test_sampling_is_seeded(tiny_model_id, pool):
    sampled = GenerationSettings(max_new_tokens=8, temperature=1.0)
    stack = Stack(name="r", stages=[make_stage("s", tiny_model_id, generation=sampled)])
    first = [t.answer for t in stack.run(PROMPTS, pool=pool, seed=1)]
    assert first == [t.answer for t in stack.run(PROMPTS, pool=pool, seed=1)]
    others = {tuple(t.answer for t in stack.run(PROMPTS, pool=pool, seed=seed)) for seed in (2, 3, 4)}
    assert others != {tuple(first)}


def test_stage_input_fills_the_template_and_renders_read_messages():
    stage = Stage(name="use", model="m", instruction="x", reads=["facts"], template="Q: {prompt}\nF:\n{facts}")
    trace = Trace(stack="s", prompt="Why?")
    assert stage_input(stage, trace, {"facts": ListFormat()}) == "Q: Why?\nF:\n(none)"
    trace.messages.append(written("facts", "* one\n* two\nnoise", fields={"items": ["one", "two"]}))
    assert stage_input(stage, trace, {"facts": ListFormat()}) == "Q: Why?\nF:\n- one\n- two"


def test_list_format_parses_items():
    assert ListFormat().parse("Facts:\n- Paris\n2. France\n* capital") == {"items": ["Paris", "France", "capital"]}
    assert ListFormat().parse("no list here") is None


def test_parallel_router_waves_follow_reads():
    stages = [make_stage(n, "m", reads=r) for n, r in [("a", ()), ("b", ()), ("c", ("a",)), ("d", ("b", "c"))]]
    stack = Stack(name="w", stages=stages)
    assert [[s.name for s in wave] for wave in ParallelRouter().waves(stack)] == [["a", "b"], ["c"], ["d"]]
    assert [[s.name for s in wave] for wave in Router().waves(stack)] == [["a"], ["b"], ["c"], ["d"]]
    lonely_final = Stack(name="x", stages=stages[:2] + [make_stage("z", "m")])
    assert [[s.name for s in wave] for wave in ParallelRouter().waves(lonely_final)] == [["a", "b"], ["z"]]


def test_bad_runs_fail_with_clear_errors(tiny_model_id, pool):
    good = Stack(name="g", stages=[make_stage("a", tiny_model_id)])
    with pytest.raises(InputError, match="empty"):
        good.run([], pool=pool)
    with pytest.raises(InputError, match="prompt 1 is empty"):
        good.run(["ok", "  "], pool=pool)
    with pytest.raises(UnknownNameError, match="stages.0.format"):
        Stack(name="f", stages=[make_stage("a", tiny_model_id, format="yaml")]).run(["x"], pool=pool)
    with pytest.raises(UnknownNameError, match="router"):
        Stack(name="r", router="random", stages=[make_stage("a", tiny_model_id)]).run(["x"], pool=pool)


def test_a_mistake_in_the_last_stage_is_reported_before_any_model_loads(tiny_model_id, pool):
    stages = [make_stage("a", tiny_model_id), make_stage("b", tiny_model_id, reads=["a"], format="yaml")]
    with pytest.raises(UnknownNameError, match="stages.1.format"):
        Stack(name="late", stages=stages).run(["x"], pool=pool)
    assert pool.loaded() == []
    with pytest.raises(UnknownNameError, match="stages.1.model"):
        Stack(name="late", stages=[stages[0], make_stage("b", "gpt-17")]).run(["x"], pool=pool)
    assert pool.loaded() == []


def test_adapter_for_another_architecture_is_refused(tmp_path, tiny_model_id, pool):
    from transformers import GPT2Config

    from fslm_core.testing import build_random_adapter, build_tiny_model

    other = build_tiny_model(tmp_path / "gpt2", config=GPT2Config(n_embd=32, n_layer=1, n_head=2))
    adapter = build_random_adapter(other, tmp_path / "gpt2-adapter", seed=0, target_modules=["c_attn"])
    with pytest.raises(AdapterError, match="does not fit"):
        Stack(name="x", stages=[make_stage("a", tiny_model_id, adapter=adapter)]).run(["x"], pool=pool)


def test_a_prompt_longer_than_the_stage_reads_is_cut_from_its_start_and_keeps_the_instruction(
    tiny_model_id, pool, caplog
):
    from fslm_core.runtime import fit_stage_prompt

    budget = GenerationSettings(max_new_tokens=4, max_prompt_tokens=96)
    stack = Stack(name="budget", stages=[make_stage("only", tiny_model_id, generation=budget)])
    prompt = "BEGINNING " + "lorem ipsum dolor sit amet " * 2000 + "so what is the question? ENDING"
    bound = bind_stack(stack, pool=pool)
    fitted = fit_stage_prompt(bound, stack.stages[0], Trace(stack="budget", prompt=prompt))
    assert fitted.tokens <= 96 and fitted.budget == 96 and 0 < fitted.kept_characters < len(prompt)
    assert "Do the only step." in fitted.text  # the instruction and template stay whole
    assert "so what is the question? ENDING" in fitted.text and "BEGINNING" not in fitted.text
    assert fitted.tokens > 96 - 16  # cut to the budget, not far below it
    with caplog.at_level("WARNING", logger="fslm_core"):
        traces = stack.run([prompt, "short"], pool=pool)
    assert traces[0].messages[0].prompt_tokens <= 96
    warnings = [record for record in caplog.records if "cut from its start" in record.getMessage()]
    assert len(warnings) == 1  # one line for the whole run


def test_prompts_within_the_stage_budget_are_left_alone(tiny_model_id, pool):
    from fslm_core.runtime import fit_stage_prompt, render_stage_prompt

    stack = Stack(name="short", stages=[make_stage("only", tiny_model_id)])
    bound = bind_stack(stack, pool=pool)
    trace = Trace(stack="short", prompt=PROMPTS[0])
    fitted = fit_stage_prompt(bound, stack.stages[0], trace)
    assert fitted.text == render_stage_prompt(bound, stack.stages[0], trace) and fitted.kept_characters is None
