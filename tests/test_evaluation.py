"""The fslm lm-eval model on tiny random models: scoring parity with lm-eval's hf model, upstream reuse, generation."""

from __future__ import annotations

import re

import pytest
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance

from fslm_core.declarations import GenerationSettings, Stack, Stage
from fslm_core.errors import InputError, StackFileError, UnknownNameError
from fslm_core.lmeval import FslmLM, parse_batch_size, task_manager
from fslm_core.lmeval.partial_scoring import blank_prompt, upstream_prompts
from fslm_core.runtime import single_model_stack
from fslm_core.runtime.decoding import cut_at_stop


@pytest.fixture(scope="module")
def hf_lm(tiny_model_dir):
    """lm-eval's own hf model on the tiny model's folder."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(tiny_model_dir), device="cpu", batch_size=4)


def small_stack(model_id: str, adapters, max_new_tokens: int = 6) -> Stack:
    """Three stages on one tiny model, each with its own adapter; short generations keep tests fast."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    return Stack(
        name="tiny-three",
        router="parallel",
        stages=[
            Stage(
                name="facts",
                model=model_id,
                adapter=adapters[0],
                instruction="List key facts.",
                template="Request:\n{prompt}",
                generation=settings,
            ),
            Stage(
                name="draft",
                model=model_id,
                adapter=adapters[1],
                instruction="Draft an answer.",
                reads=("facts",),
                generation=settings,
            ),
            Stage(
                name="answer",
                model=model_id,
                adapter=adapters[2],
                instruction="Answer.",
                reads=("facts", "draft"),
                generation=settings,
            ),
        ],
    )


def requests_for(pairs):
    return [
        Instance("loglikelihood", {}, pair, index, metadata=("manual", index, 1)) for index, pair in enumerate(pairs)
    ]


def count_generated_rows(monkeypatch, backend) -> list[int]:
    """Record how many prompts each generate call of ``backend`` receives (the real generate still runs)."""
    calls: list[int] = []
    real_generate = backend.generate

    def counting_generate(prompts, *args, **kwargs):
        calls.append(len(prompts))
        return real_generate(prompts, *args, **kwargs)

    monkeypatch.setattr(backend, "generate", counting_generate)
    return calls


def zero_shot(lm, task: str, limit: int, **options) -> dict:
    """lm-eval's simple_evaluate on the first ``limit`` documents of ``task``, zero-shot, no bootstrap."""
    return simple_evaluate(
        model=lm,
        tasks=[task],
        task_manager=task_manager([task]),
        limit=limit,
        num_fewshot=0,
        bootstrap_iters=0,
        **options,
    )


PAIRS = [
    ("Question: What is the capital of France?\nAnswer:", " Paris"),
    ("Question: What is the capital of France?\nAnswer:", " The quick brown fox"),
    ("The quick ", "brown fox jumps"),  # trailing space moves to the continuation
    ("", "Red, blue and yellow"),  # empty context: scored after the BOS token
    ("Twelve plus seven is", " nineteen: 12 + 7 = 19."),
]


def assert_same_scores(ours, theirs):
    assert len(ours) == len(theirs)
    for (logprob, greedy), (expected_logprob, expected_greedy) in zip(ours, theirs):
        assert logprob == pytest.approx(expected_logprob, abs=1e-4)
        assert greedy == expected_greedy


def test_single_stage_scores_match_lm_eval_hf_model(tiny_model_id, hf_lm, benchmark_fixture_data):
    lm = FslmLM(model=tiny_model_id, final_prompt="plain", batch_size=3, dtype="float32")  # lm-eval's HF model's
    greedy_pair = (PAIRS[0][0], hf_lm.tok_decode(_greedy_tokens(hf_lm, PAIRS[0][0], 3)))
    manual = requests_for([*PAIRS, greedy_pair])
    assert_same_scores(lm.loglikelihood(manual), hf_lm.loglikelihood(manual))
    assert any(greedy for _, greedy in hf_lm.loglikelihood(manual))  # the greedy case is really covered

    task = task_manager(["local_arc_easy"]).load(["local_arc_easy"])["tasks"]["local_arc_easy"]
    task.set_config("num_fewshot", 2)
    task.build_all_requests(limit=3, rank=0, world_size=1)
    assert_same_scores(lm.loglikelihood(task.instances), hf_lm.loglikelihood(task.instances))

    # Long enough for several windows of the tiny model's 512-token context.
    texts = [" ".join(f"Line {i}: {i * 7} red foxes." for i in range(120)), "Red, blue and yellow."]
    rolling = [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate(texts)]
    assert lm.loglikelihood_rolling(rolling) == pytest.approx(hf_lm.loglikelihood_rolling(rolling), abs=1e-4)


def _greedy_tokens(hf_lm, context: str, count: int) -> list[int]:
    import torch

    ids = torch.tensor([hf_lm.tok_encode(context)])
    with torch.no_grad():
        output = hf_lm.model.generate(ids, max_new_tokens=count, do_sample=False, pad_token_id=0)
    return output[0, ids.shape[1] :].tolist()


def test_scoring_respects_the_final_stage_adapter(tiny_model_dir, tiny_model_id, tiny_adapters):
    from lm_eval.models.huggingface import HFLM

    adapted = Stack(
        name="adapted",
        stages=[
            Stage(
                name="answer", model=tiny_model_id, adapter=tiny_adapters[3], instruction="Answer.", template="{prompt}"
            )
        ],
    )
    lm = FslmLM(stack=adapted, final_prompt="plain", batch_size=2, dtype="float32")
    hf_with_adapter = HFLM(pretrained=str(tiny_model_dir), peft=str(tiny_adapters[3]), device="cpu", batch_size=2)
    requests = requests_for(PAIRS)
    ours = lm.loglikelihood(requests)
    assert_same_scores(ours, hf_with_adapter.loglikelihood(requests))
    plain = FslmLM(model=tiny_model_id, final_prompt="plain").loglikelihood(requests)
    assert all(abs(a[0] - b[0]) > 1e-3 for a, b in zip(ours, plain))


def test_mixed_adapter_batch_scores_like_separate_batches(tiny_model_id, tiny_adapters):
    # Exact equality between batch compositions holds in float32; bf16 rounds each composition differently.
    lm = FslmLM(stack=small_stack(tiny_model_id, tiny_adapters), dtype="float32")
    backend = lm.final.backend
    names = [lm.bound.stages[name].adapter_name for name in ("facts", "draft", "answer")]
    adapters = [names[0], None, names[1], names[2], None]
    mixed = backend.loglikelihood(PAIRS, adapters, batch_size=5)
    separate = [backend.loglikelihood([pair], [adapter], batch_size=1)[0] for pair, adapter in zip(PAIRS, adapters)]
    assert_same_scores(mixed, separate)


def test_upstream_stages_run_once_per_context_not_per_choice(
    tiny_model_id, tiny_adapters, benchmark_fixture_data, monkeypatch
):
    lm = FslmLM(stack=small_stack(tiny_model_id, tiny_adapters), batch_size=8)
    generated = count_generated_rows(monkeypatch, lm.final.backend)
    scored = []
    real_loglikelihood = lm.final.backend.loglikelihood
    monkeypatch.setattr(
        lm.final.backend,
        "loglikelihood",
        lambda pairs, *a, **k: scored.append(len(pairs)) or real_loglikelihood(pairs, *a, **k),
    )

    results = zero_shot(lm, "local_arc_easy", 3, log_samples=True)

    samples = results["samples"]["local_arc_easy"]
    choices = sum(len(sample["arguments"]) for sample in samples)
    assert len(samples) == 3 and choices == 12  # 3 questions, 4 choices each
    assert sum(generated) == 2 * 3  # two upstream stages x three distinct contexts
    assert lm.upstream_runs == 6
    assert scored == [12]  # the final stage scores every choice in one call
    documents = lm.document_traces("local_arc_easy")
    assert [doc["doc_id"] for doc in documents] == [0, 1, 2]
    for doc in documents:
        (trace,) = doc["traces"]
        assert [message["stage"] for message in trace["messages"]] == ["facts", "draft"]
    assert lm.task_cost("local_arc_easy")["upstream_tokens_per_document"] > 0

    # The same contexts again: the upstream messages are reused, not regenerated.
    zero_shot(lm, "local_arc_easy", 3)
    assert sum(generated) == 6


def test_a_partial_scoring_document_runs_the_upstream_stages_once_and_scores_every_option_after_them(
    tiny_model_id, tiny_adapters, benchmark_fixture_data, monkeypatch
):
    lm = FslmLM(stack=small_stack(tiny_model_id, tiny_adapters), batch_size=8)
    scored: list[tuple[str, str]] = []
    real_loglikelihood = lm.final.backend.loglikelihood
    monkeypatch.setattr(
        lm.final.backend,
        "loglikelihood",
        lambda pairs, *a, **k: scored.extend(pairs) or real_loglikelihood(pairs, *a, **k),
    )
    zero_shot(lm, "local_winogrande", 2)
    assert lm.upstream_runs == 2 * 2  # two upstream stages x two documents, not x four option contexts
    documents = lm.document_traces("local_winogrande")
    for doc in documents:
        (trace,) = doc["traces"]
        assert "_" in trace["prompt"] and "Fill the blank (_) with one of: " in trace["prompt"]
        notes = [message["text"] for message in trace["messages"]]
        # Both options are scored after the same notes, each in its own context.
        options = [prompt for prompt, _ in scored if all(note in prompt for note in notes)]
        assert len(options) == 2 and options[0] != options[1]
    assert lm.task_cost("local_winogrande")["upstream_once_per_document"] is True


def test_the_blank_prompt_keeps_options_whole_and_shows_them():
    contexts = ["Sarah was a better surgeon than Sam so Sarah", "Sarah was a better surgeon than Sam so Sam"]
    assert blank_prompt(contexts, " always got the easier cases.") == (
        "Sarah was a better surgeon than Sam so _ always got the easier cases.\n"
        "Fill the blank (_) with one of: Sarah; Sam"
    )
    requests = [
        Instance("loglikelihood", {}, (context, " got it."), 0, metadata=("t", 7, 1)) for context in contexts
    ] + [Instance("loglikelihood", {}, ("Question: 2+2?", " 4"), 0, metadata=("t", 8, 1))]
    prompts = upstream_prompts(requests)
    assert prompts[0] == prompts[1] != contexts[0] and prompts[2] == "Question: 2+2?"


def test_final_prompt_holds_the_context_and_upstream_messages(tiny_model_id, tiny_adapters):
    lm = FslmLM(stack=small_stack(tiny_model_id, tiny_adapters))
    (trace,) = lm.upstream_traces(["Question: Which gas do plants take in?\nAnswer:"])
    prompt = lm.final_prompt_for(trace)
    assert "Which gas do plants take in?" in prompt
    assert trace.message("facts").text in prompt and trace.message("draft").text in prompt
    assert prompt.startswith("<|im_start|>system\nAnswer.") and prompt.endswith("<|im_start|>assistant\n")
    # After the assistant header the reply starts without lm-eval's leading space.
    assert lm._continuation_for(prompt, " carbon dioxide") == "carbon dioxide"


def test_generate_until_runs_the_stack_and_honours_stop_sequences(tiny_model_id, tiny_adapters, benchmark_fixture_data):
    lm = FslmLM(stack=small_stack(tiny_model_id, tiny_adapters), batch_size=4)
    manager = task_manager(["local_gsm8k"])
    options = dict(
        model=lm,
        tasks=["local_gsm8k"],
        task_manager=manager,
        limit=2,
        num_fewshot=0,
        bootstrap_iters=0,
        log_samples=True,
    )

    free = simple_evaluate(**options, gen_kwargs={"until": [], "max_gen_toks": 16})
    answers = [sample["resps"][0][0] for sample in free["samples"]["local_gsm8k"]]
    documents = lm.document_traces("local_gsm8k")
    for doc, answer in zip(documents, answers):
        (trace,) = doc["traces"]
        assert [m["stage"] for m in trace["messages"]] == ["facts", "draft", "answer"]
        assert trace["answer"] == answer
    assert documents[0]["traces"][0]["messages"][-1]["completion_tokens"] == 16

    # A stop string from inside the first answer: generation ends there.
    stop = next(match.group(0) for match in re.finditer(r"[A-Za-z]{2,}", answers[0][1:]))
    # One document, so its batch ends when it stops (a batch runs until every row has stopped).
    stopped = simple_evaluate(**{**options, "limit": 1}, gen_kwargs={"until": [stop], "max_gen_toks": 16})
    stopped_answer = stopped["samples"]["local_gsm8k"][0]["resps"][0][0]
    assert stopped_answer == cut_at_stop(answers[0], [stop]).strip()
    assert stop not in stopped_answer
    (trace,) = lm.document_traces("local_gsm8k")[0]["traces"]
    assert trace["answer"] == stopped_answer
    assert trace["messages"][-1]["completion_tokens"] < 16  # generation itself stopped early


def test_model_args_are_parsed_like_lm_eval_passes_them(tiny_model_id):
    lm = FslmLM.create_from_arg_string(
        f"model={tiny_model_id},final_prompt=plain", {"batch_size": "auto", "max_batch_size": 4, "device": "cpu"}
    )
    assert lm.batch_size == 4 and lm.final_prompt == "plain" and lm.stack.name == f"single:{tiny_model_id}"
    assert parse_batch_size("8") == 8 and parse_batch_size(3) == 3 and parse_batch_size(None) == 16
    assert parse_batch_size("auto:4") == 16


def test_lm_eval_finds_fslm_and_still_finds_its_own_models():
    from lm_eval.api.registry import get_model

    assert get_model("fslm") is FslmLM
    assert get_model("hf").__name__ == "HFLM"


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"stack": "/no/such/stack.yaml"}, StackFileError, "stack file not found: /no/such/stack.yaml"),
        ({}, InputError, "model_args: name what to evaluate"),
        ({"decomposition": "no-such"}, UnknownNameError, "model_args.decomposition: unknown decomposition 'no-such'"),
        ({"model": "m", "batch_size": "many"}, InputError, "batch_size: expected a positive integer"),
        ({"model": "m", "final_prompt": "chatty"}, InputError, "model_args.final_prompt"),
        ({"model": "m", "temprature": 1}, InputError, r"unknown argument\(s\) \['temprature'\]"),
        ({"stack": "x.yaml", "decomposition": "fslm-paper"}, InputError, "not both"),
    ],
)
def test_bad_model_args_raise_one_clear_error(arguments, error, message):
    with pytest.raises(error, match=message):
        FslmLM(**arguments)


def test_single_model_stack_reads_the_prompt_as_it_is():
    stack = single_model_stack("hf:/models/x")
    assert [stage.template for stage in stack.stages] == ["{prompt}"]
    assert stack.final_stage.adapter is None


def test_final_stage_scores_are_read_from_the_stage_cache_and_never_across_adapters(
    tiny_model_id, tiny_adapters, tmp_path, monkeypatch
):
    from fslm_core.runtime.stage_cache import StageCache

    cache = StageCache(tmp_path / "stages.sqlite")

    def scorer(adapter):
        stage = Stage(name="answer", model=tiny_model_id, adapter=adapter, instruction="Answer.", template="{prompt}")
        lm = FslmLM(stack=Stack(name="s", stages=[stage]), final_prompt="plain", batch_size=2, stage_cache=False)
        lm.stage_cache = cache
        return lm

    first = scorer(tiny_adapters[3])
    cold = first.loglikelihood(requests_for(PAIRS))
    scored_rows: list[int] = []
    backend = first.final.backend
    original = backend.loglikelihood
    monkeypatch.setattr(
        backend, "loglikelihood", lambda pairs, *a, **k: scored_rows.append(len(pairs)) or original(pairs, *a, **k)
    )
    warm = scorer(tiny_adapters[3]).loglikelihood(requests_for(PAIRS))
    assert warm == cold and scored_rows == []  # every score read back, none computed
    other = scorer(tiny_adapters[2]).loglikelihood(requests_for(PAIRS))
    assert scored_rows == [len(PAIRS)]  # another adapter: scored afresh
    assert all(abs(a[0] - b[0]) > 1e-4 for a, b in zip(other, cold))
