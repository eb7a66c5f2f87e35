"""Tool stages and sampling with a vote, on the tiny model: declared, checked, run, traced, cached, scored."""

from __future__ import annotations

import itertools
import re

import pytest
from fslm_cli import run_fslm

from fslm_core import GenerationSettings, Stack, Stage, hookimpl, register_plugin
from fslm_core.api import Tool, ToolResult
from fslm_core.declarations import Vote, validate_stack
from fslm_core.errors import DeclarationError, StackFileError, UnknownNameError
from fslm_core.plugins import get_registry
from fslm_core.runtime import run_stack
from fslm_core.runtime.costs import stage_costs
from fslm_core.runtime.stage_cache import StageCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["What is 12 + 7?", "Name three primary colors.", "What is 6 times 7?"]
SHORT = GenerationSettings(max_new_tokens=6)


def writer(model_id: str, **fields) -> Stage:
    return Stage(name="write", model=model_id, instruction="Write the sum.", **{"generation": SHORT, **fields})


def test_a_stage_is_a_model_or_a_tool_and_fields_a_tool_cannot_use_are_refused(tiny_model_id):
    def stack_of(**stage) -> dict:
        return {"name": "s", "stages": [{"name": "a", **stage}]}

    with pytest.raises(StackFileError, match="give either model .* or tool .*, not both or neither"):
        validate_stack(stack_of(instruction="x"))
    with pytest.raises(StackFileError, match="give either model"):
        validate_stack(stack_of(model=tiny_model_id, tool="python", instruction="x"))
    with pytest.raises(StackFileError, match="stages.0.instruction: a tool stage has no model"):
        validate_stack(stack_of(tool="python", instruction="Run it."))
    with pytest.raises(StackFileError, match="stages.0.generation: a tool stage has no model"):
        validate_stack(stack_of(tool="python", generation={"max_new_tokens": 4}))
    with pytest.raises(StackFileError, match="instruction: a model stage needs an instruction"):
        validate_stack(stack_of(model=tiny_model_id))
    with pytest.raises(StackFileError, match="stages.0.tool_options: only a tool stage takes them"):
        validate_stack(stack_of(model=tiny_model_id, instruction="x", tool_options={"a": 1}))
    with pytest.raises(StackFileError, match="vote: a stage with samples > 1 needs a vote"):
        validate_stack(stack_of(model=tiny_model_id, instruction="x", samples=3))
    with pytest.raises(StackFileError, match="samples: sampling needs generation.temperature above 0"):
        validate_stack(stack_of(model=tiny_model_id, instruction="x", samples=3, vote={"by": "number"}))
    saved = Stack(name="t", stages=[writer(tiny_model_id), Stage(name="run", tool="python", reads=["write"])])
    assert validate_stack(__import__("yaml").safe_load(saved.to_yaml())) == saved


def test_unknown_tools_and_options_are_named_with_their_field_before_any_model_loads(tiny_model_id):
    registry = get_registry()
    unknown = Stack(name="t", stages=[writer(tiny_model_id), Stage(name="run", tool="pyhton", reads=["write"])])
    # The known ones: the built-in tools and those of the installed plugins (smollm2-gsm8k's numerals).
    known = ", ".join(registry.names("tools"))
    with pytest.raises(UnknownNameError, match=rf"stages\.1\.tool: unknown tool 'pyhton'; known: {known}$"):
        run_stack(unknown, PROMPTS, registry=registry)
    bad_option = Stack(name="t", stages=[Stage(name="run", tool="python", tool_options={"timeout": 5})])
    with pytest.raises(DeclarationError, match=r"stages\.0\.tool_options: unknown option 'timeout' for tool 'python'"):
        run_stack(bad_option, PROMPTS)
    bad_vote = Stack(
        name="t",
        stages=[
            writer(
                tiny_model_id,
                samples=2,
                vote=Vote(by="abacus"),
                generation=GenerationSettings(max_new_tokens=4, temperature=0.8),
            )
        ],
    )
    with pytest.raises(UnknownNameError, match=r"stages\.0\.vote\.by: unknown tool 'abacus'"):
        run_stack(bad_vote, PROMPTS)


def test_a_tool_stage_reads_the_message_before_it_and_is_traced_costed_and_cached(tiny_model_id, pool, tmp_path):
    program = Stage(name="program", tool="calculator", template="{prompt}")  # the prompt is the expression
    doubled = Stage(name="doubled", tool="python", template="print(2 * {program})", reads=["program"])
    stack = Stack(name="tools", stages=[writer(tiny_model_id), program, doubled])
    prompts = ["12 + 7", "6 * 7", "1 / 0"]
    cache = StageCache(tmp_path / "stages.sqlite")
    traces = run_stack(stack, prompts, pool=pool, cache=cache)
    assert [trace.message("program").text for trace in traces] == ["19", "42", "error: division by zero"]
    assert [trace.answer for trace in traces][:2] == ["38", "84"]
    assert traces[2].answer.startswith("error: SyntaxError")  # "print(2 * error: ...)" is no program
    message = traces[0].message("doubled")
    assert (message.model, message.completion_tokens, message.cached) == ("tool:python", 0, False)
    assert message.latency_s > 0 and message.batch_size == 3
    assert "[3] doubled  (tool:python)\n    38" in traces[0].render()
    costs = {row.stage: row for row in stage_costs(stack, traces)}
    assert costs["doubled"].runs == 3 and costs["doubled"].seconds > 0 and costs["doubled"].completion_tokens == 0
    again = run_stack(stack, prompts, pool=pool, cache=cache)
    assert all(trace.message("doubled").cached for trace in again)
    assert [trace.answer for trace in again] == [trace.answer for trace in traces]


def test_routers_see_a_tool_s_message_like_any_other(tiny_model_id, pool):
    from fslm_core.declarations import Condition

    checked = Stage(
        name="checked", tool="calculator", template="{prompt}", exit_if=Condition(stage="checked", contains="error")
    )
    stack = Stack(name="route", router="early-exit", stages=[checked, writer(tiny_model_id, reads=["checked"])])
    traces = run_stack(stack, ["2 + 2", "2 +"], pool=pool)
    assert [len(trace.messages) for trace in traces] == [2, 1]
    assert traces[1].answer.startswith("error: not an arithmetic expression")


def test_a_tool_that_raises_gives_an_error_message_and_a_broken_tool_plugin_is_isolated(fresh_registry, pool):
    class Flaky(Tool):
        name = "flaky"

        def run(self, text, options):
            if "bad" in text:
                raise RuntimeError("it broke")
            return ToolResult(text.upper())

    class FlakyPlugin:
        @hookimpl
        def register_tools(self, register):
            register(Flaky())

    class BrokenPlugin:
        @hookimpl
        def register_tools(self, register):
            raise RuntimeError("cannot register")

    register_plugin(FlakyPlugin(), name="flaky-tools")
    register_plugin(BrokenPlugin(), name="broken-tools")
    registry = get_registry()
    assert [(broken.name, broken.stage) for broken in registry.broken] == [("broken-tools", "register_tools")]
    assert {"python", "calculator", "flaky"} <= set(registry.names("tools"))
    traces = run_stack(Stack(name="f", stages=[Stage(name="shout", tool="flaky")]), ["fine", "bad"], pool=pool)
    assert [trace.answer for trace in traces] == ["FINE", "error: tool 'flaky' failed: RuntimeError: it broke"]
    # Voting by the same tool: the sample it fails on has no answer key; the vote goes on.
    from fslm_core.runtime.voting import answer_keys

    assert answer_keys(["one", "bad one", "one"], Vote(by="flaky"), registry.tool("flaky")) == ["ONE", None, "ONE"]


def test_fslm_plugins_lists_the_tools(capsys):
    code, out, _ = run_fslm(capsys, "plugins")
    assert code == 0
    section = out.split("tools:\n", 1)[1].splitlines()
    listed = [line.split()[0] for line in itertools.takewhile(lambda line: line.startswith("  "), section)]
    assert {"calculator", "python", "numerals"} <= set(listed)  # built in, and from fslm-plugin-smollm2-gsm8k


def test_a_sampling_stage_votes_and_the_trace_shows_every_sample(tiny_model_id, pool):
    sampling = GenerationSettings(max_new_tokens=6, temperature=1.5)
    stack = Stack(
        name="vote",
        stages=[writer(tiny_model_id, samples=5, vote=Vote(by="text"), generation=sampling)],
        dtype="float32",
    )
    traces = run_stack(stack, PROMPTS, pool=pool, seed=3)
    for trace in traces:
        message = trace.message("write")
        votes = message.votes
        assert len(votes) == 5 and sum(vote.chosen for vote in votes) == 1
        winner = next(vote for vote in votes if vote.chosen)
        assert message.text == winner.text
        counts = {key: sum(v.key == key for v in votes) for key in {v.key for v in votes if v.key}}
        assert counts[winner.key] == max(counts.values())
        tied = [v for v in votes if v.key and counts[v.key] == counts[winner.key]]
        assert winner.mean_logprob == max(v.mean_logprob for v in tied)  # ties go to the surer sample
        assert message.completion_tokens >= 5  # every sample's tokens are counted
        assert message.vote_summary().startswith(f"vote: {counts[winner.key]} of 5 samples say")
    assert len({vote.text for trace in traces for vote in trace.message("write").votes}) > 3  # they did sample


def test_a_sampling_stage_moves_the_progress_bar_as_its_batches_finish(tiny_model_id, pool, monkeypatch, capsys):
    monkeypatch.setenv("FSLM_PROGRESS_SECONDS", "0")  # a progress line at every update
    sampling = GenerationSettings(max_new_tokens=4, temperature=1.0)
    stack = Stack(name="vote", stages=[writer(tiny_model_id, samples=4, vote=Vote(by="text"), generation=sampling)])
    run_stack(stack, PROMPTS, pool=pool, seed=3, batch_size=4, progress=True)  # 12 rows in batches of 4
    counts = [int(found) for found in re.findall(r"(\d+)/3 ", capsys.readouterr().err)]
    assert counts[-1] == 3 and {1, 2} <= set(counts)  # one question at a time, not all at the end


def test_a_vote_by_a_tool_keys_each_sample_by_its_output(tiny_model_id, pool):
    from fslm_core.runtime.voting import answer_keys, vote_on

    keys = answer_keys(
        ["print(6 * 7)", "```python\nprint(40 + 2)\n```", "print(1/0)", "no code"],
        Vote(by="python"),
        get_registry().tool("python"),
    )
    assert keys == ["42", "42", None, None]
    assert answer_keys(["It is 1,200.", "about 3.50 kg", "none"], Vote(by="number"), None) == ["1200", "3.5", None]
    from fslm_core.api.backends import Generation

    samples = [Generation(text, 5, 4, 0.1, 4, logprob) for text, logprob in (("a", -1.0), ("b", -0.5), ("c", -0.1))]
    chosen = vote_on(samples, ["x", "y", "y"])
    assert chosen.text == "c" and chosen.completion_tokens == 12 and [v.chosen for v in chosen.votes] == [0, 0, 1]
    nothing = vote_on(samples, [None, None, None])
    assert nothing.text == "c"  # no answer anywhere: the surest sample


def tool_final_stack(model_id: str) -> Stack:
    """A model stage, then the calculator on the prompt itself: the answer is a tool's."""
    return Stack(
        name="tool-final",
        stages=[
            writer(model_id),
            Stage(name="answer", tool="calculator", template="{prompt}", reads=["write"]),
        ],
    )


def test_lm_eval_scores_a_stack_ending_in_a_tool_on_generate_until_and_refuses_log_likelihoods(tiny_model_id):
    from lm_eval.api.instance import Instance

    from fslm_core.errors import InputError
    from fslm_core.lmeval import FslmLM

    lm = FslmLM(stack=tool_final_stack(tiny_model_id), batch_size=4)
    requests = [
        Instance("generate_until", {}, (context, {"until": ["\n\n"], "max_gen_toks": 8}), index)
        for index, context in enumerate(["12 + 7", "2 * (3 + 4)", "what?"])
    ]
    assert lm.generate_until(requests) == ["19", "14", "error: not an arithmetic expression: 'what?'"]
    with pytest.raises(InputError, match="ends with a tool stage \\(calculator\\), which gives no log-likelihoods"):
        lm.loglikelihood([Instance("loglikelihood", {}, ("1 + 1", " 2"), 0)])


def test_fslm_serve_answers_with_a_tool_stage_at_the_end(tiny_model_id, tmp_path):
    import openai
    from serve_process import Server

    folder = tool_final_stack(tiny_model_id).save(tmp_path / "stack")
    server = Server([str(folder)], log_dir=tmp_path)
    try:
        server.wait_ready()
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.chat.completions.create(model="tool-final", messages=[{"role": "user", "content": "6 * 7"}])
        assert reply.choices[0].message.content == "42"
        stages = [message["stage"] for message in reply.model_extra["fslm_trace"]["messages"]]
        assert stages == ["write", "answer"]
        streamed = client.chat.completions.create(
            model="tool-final", messages=[{"role": "user", "content": "10 / 4"}], stream=True
        )
        assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == "2.5"
    finally:
        server.stop()


def test_a_cascade_defers_answers_not_of_its_answer_form_whatever_their_signal(tiny_model_id):
    """A program-aided stack's fraction or error is wrong however sure the model was: it goes to the fallback."""
    from lm_eval.api.instance import Instance

    from fslm_core.lmeval import FslmLM

    stack = Stack(
        name="checked",
        stages=tool_final_stack(tiny_model_id).stages,
        fallback={"model": tiny_model_id, "generation": {"answer_form": "whole_number"}},
    )
    traces = run_stack(stack, ["6 * 7", "10 / 4", "what?"])
    routes = [trace.routing[-1] for trace in traces]
    assert [route.decision for route in routes] == ["keep", "defer", "defer"]
    assert routes[0].reason == "answer is a whole_number: kept"
    assert routes[1].reason == f"answer '2.5' is not a whole_number: answered by model:{tiny_model_id}"
    assert traces[0].answer == "42" and [m.stage for m in traces[0].messages] == ["write", "answer"]
    for deferred in traces[1:]:
        assert [m.stage for m in deferred.messages] == ["write", "answer", "fallback.answer"]
        assert deferred.answer == deferred.messages[-1].text
    # The same under lm-eval, which records every document's own answer beside its signals.
    lm = FslmLM(stack=stack, batch_size=4)
    requests = [
        Instance("generate_until", {}, (context, {"until": ["\n\n"], "max_gen_toks": 8}), index, ("t", index, 1))
        for index, context in enumerate(["6 * 7", "10 / 4"])
    ]
    answers = lm.generate_until(requests)
    assert answers[0] == "42" and answers[1] != "2.5"
    records = lm.document_traces("t")
    assert [(record["answer"], record["path"]) for record in records] == [("42", "stack"), ("2.5", "fallback")]
    assert records[1]["reason"].startswith("answer '2.5' is not a whole_number")


def test_a_vote_can_count_only_answers_of_a_form():
    from fslm_core.runtime.voting import answer_keys

    texts = ["print(7 / 2)", "print(6 * 7)", "print(-1)", "print(3 * 2.0)", "print('many')"]
    keys = answer_keys(texts, Vote(by="python", answer_form="whole_number"), get_registry().tool("python"))
    assert keys == [None, "42", None, "6", None]
    assert answer_keys(["about 3.5", "x"], Vote(by="number", answer_form="number"), None) == ["3.5", None]
    with pytest.raises(
        ValueError, match=r"answer_form\s+Value error, expected one of number, whole_number, got 'integer'"
    ):
        Vote(answer_form="integer")
