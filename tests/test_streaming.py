"""The engine's listener on a tiny random Llama: messages as recorded, the final stage's text as it grows."""

import pytest

from fslm_core import GenerationSettings, Stack, Stage
from fslm_core.runtime import run_stack
from fslm_core.runtime.decoding import streamable_text
from fslm_core.runtime.listener import RunListener

PROMPTS = ["What is the capital of France?", "Name three primary colors.", "What is 12 + 7?"]


def stack_on(model: str, final_tokens: int = 24) -> Stack:
    return Stack(
        name="streamed",
        stages=[
            Stage(name="first", model=model, instruction="Restate.", generation=GenerationSettings(max_new_tokens=6)),
            Stage(
                name="last",
                model=model,
                instruction="Answer.",
                reads=["first"],
                generation=GenerationSettings(max_new_tokens=final_tokens),
            ),
        ],
    )


class Recorder(RunListener):
    def __init__(self, stop_after: dict[int, int] | None = None, cancelled: set[int] = frozenset()):
        self.texts: dict[int, list[str]] = {}
        self.messages: list[tuple[int, str]] = []
        self.stop_after = stop_after or {}
        self.cancelled_inputs = set(cancelled)

    def streams(self, stage):
        return stage.name == "last"

    def on_text(self, index, stage, text):
        assert stage == "last"
        self.texts.setdefault(index, []).append(text)
        return len(self.texts[index]) < self.stop_after.get(index, 10**6)

    def on_message(self, index, message):
        self.messages.append((index, message.stage))

    def cancelled(self, index):
        return index in self.cancelled_inputs


def test_the_final_stage_streams_growing_prefixes_of_its_answer(tiny_model_id, pool):
    plain = run_stack(stack_on(tiny_model_id), PROMPTS, pool=pool)
    heard = Recorder()
    traces = run_stack(stack_on(tiny_model_id), PROMPTS, pool=pool, listener=heard)

    assert [trace.answer for trace in traces] == [trace.answer for trace in plain]  # listening changes nothing
    assert sorted(heard.messages) == sorted((i, stage) for i in range(3) for stage in ("first", "last"))
    assert [stage for _, stage in heard.messages[:3]] == ["first"] * 3  # messages arrive stage by stage
    for index, trace in enumerate(traces):
        texts = heard.texts.get(index, [])
        assert len(texts) >= 2, texts  # the answer streamed, in more than one piece
        for shorter, longer in zip(texts, texts[1:]):
            assert longer.startswith(shorter) and longer != shorter
        assert trace.answer.startswith(texts[-1])


def test_a_row_whose_listener_says_stop_ends_early_and_the_others_do_not(tiny_model_id, pool):
    full = run_stack(stack_on(tiny_model_id, final_tokens=40), PROMPTS, pool=pool)
    heard = Recorder(stop_after={1: 2})
    traces = run_stack(stack_on(tiny_model_id, final_tokens=40), PROMPTS, pool=pool, listener=heard)

    stopped = traces[1].message("last")
    assert stopped.completion_tokens < full[1].message("last").completion_tokens
    assert len(heard.texts[1]) == 2
    assert [traces[i].answer for i in (0, 2)] == [full[i].answer for i in (0, 2)]


def test_a_cancelled_input_runs_no_further_stages(tiny_model_id, pool):
    traces = run_stack(stack_on(tiny_model_id), PROMPTS, pool=pool, listener=Recorder(cancelled={0}))
    assert traces[0].messages == [] and traces[0].answer is None
    assert [message.stage for message in traces[1].messages] == ["first", "last"]


@pytest.mark.parametrize(
    ("text", "stop", "shown"),
    [
        ("  Paris is", (), "Paris is"),
        ("Paris\n\nUs", ("\n\nUser",), "Paris"),  # may become the stop string: held back
        ("Paris\n\nUser: more", ("\n\nUser",), "Paris"),
        ("caf\ufffd", (), "caf"),  # half a character
        ("Paris ", (), "Paris"),
    ],
)
def test_streamable_text_shows_only_what_the_final_text_will_start_with(text, stop, shown):
    assert streamable_text(text, stop) == shown
