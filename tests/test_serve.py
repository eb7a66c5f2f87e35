"""``fslm serve`` as a real process on 127.0.0.1: the official ``openai`` client, raw HTTP for errors, batching."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.request

import openai
import pytest
from playwright.sync_api import expect
from serve_process import Server, call

from fslm_core import GenerationSettings, Stack, Stage

PROMPTS = ["What is the capital of France?", "Name three primary colors.", "What is 12 + 7?", "Say hello."]


@pytest.fixture(scope="module")
def served_stack_file(tiny_model_id, tiny_adapters, tmp_path_factory):
    folder = tmp_path_factory.mktemp("served-stack")
    stack = Stack(
        name="tiny-served",
        stages=[
            Stage(
                name="interpret",
                model=tiny_model_id,
                adapter=tiny_adapters[0],
                instruction="Restate the task.",
                generation=GenerationSettings(max_new_tokens=8),
            ),
            Stage(
                name="answer",
                model=tiny_model_id,
                adapter=tiny_adapters[1],
                instruction="Answer.",
                reads=["interpret"],
                generation=GenerationSettings(max_new_tokens=24),
            ),
        ],
    )
    return stack.save(folder / "stack.yaml")


@pytest.fixture(scope="module")
def server(served_stack_file, tmp_path_factory):
    running = Server([str(served_stack_file)], "--batch-window-ms", "200", log_dir=tmp_path_factory.mktemp("logs"))
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_served_stack_with_its_stages(client):
    models = client.models.list()
    assert [model.id for model in models.data] == ["tiny-served"]
    assert models.data[0].model_extra["fslm_stages"] == ["interpret", "answer"]


def test_chat_completion_answers_with_the_final_stage_and_counts_every_stage(client):
    reply = client.chat.completions.create(model="tiny-served", messages=[{"role": "user", "content": PROMPTS[0]}])
    trace = reply.model_extra["fslm_trace"]
    assert [message["stage"] for message in trace["messages"]] == ["interpret", "answer"]
    assert reply.choices[0].message.content == trace["answer"] == trace["messages"][-1]["text"]
    assert reply.usage.completion_tokens == sum(m["completion_tokens"] for m in trace["messages"])
    assert reply.usage.prompt_tokens == sum(m["prompt_tokens"] for m in trace["messages"])
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_the_trace_can_be_left_out(client):
    reply = client.chat.completions.create(
        model="tiny-served", messages=[{"role": "user", "content": PROMPTS[1]}], extra_body={"fslm_trace": False}
    )
    assert "fslm_trace" not in (reply.model_extra or {})
    assert reply.choices[0].message.content is not None


def test_completions_take_several_prompts_and_answer_each_as_the_chat_endpoint_does(client):
    reply = client.completions.create(model="tiny-served", prompt=PROMPTS[:2])
    chat = client.chat.completions.create(model="tiny-served", messages=[{"role": "user", "content": PROMPTS[1]}])
    assert [choice.index for choice in reply.choices] == [0, 1]
    assert reply.choices[1].text == chat.choices[0].message.content  # greedy: the same answer either way
    assert reply.choices[0].model_extra["fslm_trace"]["prompt"] == PROMPTS[0]


def test_streamed_chat_adds_up_to_the_answer_and_reports_each_stage_first(client):
    whole = client.chat.completions.create(model="tiny-served", messages=[{"role": "user", "content": PROMPTS[2]}])
    stream = client.chat.completions.create(
        model="tiny-served",
        messages=[{"role": "user", "content": PROMPTS[2]}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, stages, reasons, usage = [], [], [], None
    for part in stream:
        extra = part.model_extra or {}
        if "fslm_stage" in extra:
            stages.append(extra["fslm_stage"]["stage"])
        for choice in part.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
        usage = part.usage or usage
    assert "".join(pieces) == whole.choices[0].message.content
    assert stages == ["interpret", "answer"]
    assert len(reasons) == 1 and usage.total_tokens == whole.usage.total_tokens
    if whole.choices[0].message.content:
        assert len(pieces) > 1  # streamed as generated, not in one piece at the end


def test_streamed_completions_carry_the_text_per_choice(client):
    whole = client.completions.create(model="tiny-served", prompt=PROMPTS[3])
    text = "".join(
        choice.text
        for part in client.completions.create(model="tiny-served", prompt=PROMPTS[3], stream=True)
        for choice in part.choices
    )
    assert text == whole.choices[0].text


def test_sampling_settings_reach_the_final_stage(client):
    short = client.chat.completions.create(
        model="tiny-served", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=2
    )
    final = short.model_extra["fslm_trace"]["messages"][-1]
    assert final["completion_tokens"] <= 2 and short.choices[0].finish_reason == "length"
    seeded = [
        client.chat.completions.create(
            model="tiny-served", messages=[{"role": "user", "content": PROMPTS[0]}], temperature=1.0, seed=7
        )
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]


def test_concurrent_requests_run_as_one_batch_and_all_succeed(client, server):
    before = call("GET", server.url + "/fslm/stats")[1]
    answers: dict[int, str] = {}

    def ask(index: int) -> None:
        reply = client.chat.completions.create(
            model="tiny-served", messages=[{"role": "user", "content": PROMPTS[index % 4] + f" ({index})"}]
        )
        answers[index] = reply.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    after = call("GET", server.url + "/fslm/stats")[1]
    assert sorted(answers) == list(range(8))
    assert after["served"] - before["served"] == 8 and after["failed"] == before["failed"]
    new_batches = after["recent_batches"][len(before["recent_batches"]) :]
    assert max(batch["size"] for batch in new_batches) > 1  # the window gathered concurrent requests


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        (b"{not json", 400, None, "invalid_json"),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model", "missing_field"),
        ({"model": "tiny-served"}, 400, "messages", "missing_field"),
        ({"model": "tiny-served", "messages": [], "temperature": 0}, 400, "messages", None),
        (
            {"model": "tiny-served", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
            400,
            "temperature",
            "invalid_value",
        ),
        (
            {"model": "tiny-served", "messages": [{"role": "robot", "content": "hi"}]},
            400,
            "messages.0.role",
            "invalid_value",
        ),
        ({"model": "no-such-stack", "messages": [{"role": "user", "content": "hi"}]}, 404, "model", "model_not_found"),
        (
            {"model": "tiny-served", "messages": [{"role": "user", "content": "word " * 2000}]},
            400,
            "messages",
            "context_length_exceeded",
        ),
    ],
    ids=[
        "malformed-json",
        "no-model",
        "no-messages",
        "empty-messages",
        "wrong-type",
        "bad-role",
        "unknown-model",
        "too-long",
    ],
)
def test_bad_requests_get_openai_error_bodies_naming_the_field(server, body, status, param, code):
    got, reply = call("POST", server.url + "/v1/chat/completions", body)
    assert got == status, reply
    error = reply["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param
    if code:
        assert error["code"] == code


def test_unknown_path_and_health(server):
    assert call("GET", server.url + "/v1/nothing")[0] == 404
    status, body = call("GET", server.url + "/health")
    assert status == 200 and body == {"status": "ok", "stacks": ["tiny-served"]}


def test_a_client_that_leaves_mid_stream_does_not_disturb_the_others(client, server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    body = {"model": "tiny-served", "stream": True, "messages": [{"role": "user", "content": PROMPTS[0]}]}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    connection.close()  # leaves after the first chunk
    reply = client.chat.completions.create(model="tiny-served", messages=[{"role": "user", "content": PROMPTS[1]}])
    assert reply.choices[0].message.content is not None
    assert call("GET", server.url + "/fslm/stats")[1]["failed"] == 0


def test_sigterm_lets_the_request_in_flight_finish_then_exits(served_stack_file, tmp_path):
    server = Server([str(served_stack_file)], log_dir=tmp_path)
    server.wait_ready()
    result = {}

    def ask() -> None:
        result["reply"] = call(
            "POST",
            server.url + "/v1/chat/completions",
            {"model": "tiny-served", "max_tokens": 200, "messages": [{"role": "user", "content": PROMPTS[0]}]},
        )

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(0.5)  # the request is in the server before it is told to stop
    started = time.monotonic()
    code = server.stop(timeout=60)
    asking.join(60)
    # Every request in flight answered: a clean stop, status 0 (uvicorn alone would re-raise SIGTERM: 143).
    assert code == 0, server.log.read_text()
    assert time.monotonic() - started < 60
    status, reply = result["reply"]
    assert status == 200 and reply["choices"][0]["message"]["content"] is not None


def raw_post(server, body: bytes, headers: dict) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request("POST", "/v1/chat/completions", body, headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    except (BrokenPipeError, ConnectionResetError):
        response = connection.getresponse()  # refused before the whole body was sent: the answer is there
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def test_a_request_over_the_size_limit_is_refused_unread_while_health_answers_at_once(server):
    message = {"role": "user", "content": "word " * (1 << 20)}  # 5 MiB
    body = json.dumps({"model": "tiny-served", "messages": [message]}).encode()
    result = {}
    sending = threading.Thread(
        target=lambda: result.update(reply=raw_post(server, body, {"Content-Type": "application/json"}))
    )
    sending.start()
    started = time.monotonic()
    status, _ = call("GET", server.url + "/health", timeout=5)
    assert status == 200 and time.monotonic() - started < 1.0
    sending.join(60)
    status, reply = result["reply"]
    assert status == 413 and reply["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(5):
            yield b" " * (1 << 20)

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request(
            "POST", "/v1/completions", chunks(), {"Content-Type": "application/json"}, encode_chunked=True
        )
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert connection.getresponse().status == 413
    connection.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [("stream", "yes"), ("max_tokens", True), ("seed", "7"), ("temperature", "0.5"), ("fslm_trace", 1)],
)
def test_request_fields_keep_their_types(server, field, value):
    body = {"model": "tiny-served", "messages": [{"role": "user", "content": "hi"}], field: value}
    status, reply = call("POST", server.url + "/v1/chat/completions", body)
    assert status == 400 and reply["error"]["param"] == field and reply["error"]["code"] == "invalid_value"


@pytest.mark.parametrize(
    "body",
    [b'{"model": "tiny-served", "messages": "\xff\xfe"}', b"[" * 10_000 + b"]" * 10_000],
    ids=["invalid-utf8", "10000-deep"],
)
def test_bodies_that_are_not_json_say_so(server, body):
    status, reply = raw_post(server, body, {"Content-Type": "application/json"})
    assert status == 400 and reply["error"]["code"] == "invalid_json", reply


def test_errors_name_the_field_as_the_client_wrote_it_and_the_missing_content_type(server):
    body = {"model": "tiny-served", "messages": [{"role": "user", "content": 5}]}
    status, reply = call("POST", server.url + "/v1/chat/completions", body)
    assert status == 400 and reply["error"]["param"] == "messages.0.content"
    status, reply = raw_post(server, json.dumps({"model": "tiny-served"}).encode(), {"Content-Type": "text/plain"})
    assert status == 400 and reply["error"]["code"] == "invalid_content_type"
    assert "Content-Type: application/json" in reply["error"]["message"]


def test_the_page_may_run_only_its_own_script_and_may_not_be_framed(server):
    with urllib.request.urlopen(server.url + "/", timeout=10) as page:
        headers = page.headers
        html = page.read().decode()
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy and "frame-ancestors 'none'" in policy
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert ".textContent" in html and ".innerHTML" not in html  # the page writes model text as text


@pytest.mark.browser
def test_the_page_shows_each_stage_as_it_runs_and_the_streamed_answer(server, client, browser_page):
    prompt = "What is the capital of France?"
    expected = client.chat.completions.create(model="tiny-served", messages=[{"role": "user", "content": prompt}])
    trace = expected.model_extra["fslm_trace"]

    browser_page.goto(server.url + "/")
    assert browser_page.title() == "fslm serve"
    browser_page.wait_for_selector("#model option[value='tiny-served']", state="attached")
    browser_page.fill("#prompt", prompt)
    browser_page.click("#send")
    # A locator, not wait_for_function: the page's Content-Security-Policy forbids evaluating strings, and the
    # page must work under its own policy.
    expect(browser_page.locator("#status")).to_have_text(re.compile(r"^done"), timeout=60000)

    cards = browser_page.locator("li.stage")
    assert cards.count() == 2
    assert [cards.nth(i).get_attribute("data-stage") for i in range(2)] == ["interpret", "answer"]
    for index, message in enumerate(trace["messages"]):
        assert cards.nth(index).locator(".text").inner_text().strip() == message["text"].strip()
        facts = cards.nth(index).locator(".facts").inner_text()
        assert f"{message['completion_tokens']} out" in facts and " s " in facts
    assert "final" in cards.nth(1).get_attribute("class")


@pytest.mark.slow
def test_the_default_stack_served_answers_a_question_through_the_openai_client(tmp_path):
    server = Server([], log_dir=tmp_path)  # no --stack: the default stack, on the embedded SmolLM2
    try:
        server.wait_ready(timeout=600)
        # The server answers from its first seconds, while the model loads in the background.
        assert (503, "loading") in server.health_seen and server.health_seen[-1] == (200, "ok")
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
        reply = client.chat.completions.create(
            model=client.models.list().data[0].id,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
        )
    finally:
        server.stop()
    stages = [message["stage"] for message in reply.model_extra["fslm_trace"]["messages"]]
    assert stages == ["interpret", "recall", "reason", "answer"]
    assert any("Paris" in message["text"] for message in reply.model_extra["fslm_trace"]["messages"])


def test_a_failed_batch_is_rerun_without_sending_any_request_a_stage_twice(served_stack_file):
    from fslm_core import load_stack
    from fslm_core.serving.batcher import Batcher, Job

    stack = load_stack(served_stack_file)
    events: dict[str, list] = {}
    done = threading.Event()

    def job(name: str, stream: bool, fails_on: str | None = None) -> Job:
        events[name] = []

        def report(event) -> None:
            kind, value = event
            if kind == "stage" and value.stage == fails_on:
                raise RuntimeError(f"client {name} cannot take stage {fails_on}")  # fails the whole batch
            events[name].append((kind, value.stage if kind == "stage" else value))
            if all(items and items[-1][0] in ("done", "error") for items in events.values()):
                done.set()

        return Job(stack.name, PROMPTS[len(events) - 1], stack.final_stage.generation, None, stream, report)

    def run(*jobs: Job) -> None:
        done.clear()
        batcher = Batcher({stack.name: stack}, window_s=0.2)
        for item in jobs:
            batcher.submit(item)  # queued before the thread starts: one batch
        batcher.start()
        assert done.wait(120), events
        batcher.stop()
        assert batcher.batch_sizes == {len(jobs): 1}

    # The batch fails at the first stage: the others are rerun and get each stage once, then their answer.
    run(job("a", stream=True), job("b", stream=False), job("c", stream=False, fails_on="interpret"))
    for name in ("a", "b"):
        kinds = [kind for kind, _ in events[name]]
        assert [value for kind, value in events[name] if kind == "stage"] == ["interpret", "answer"]
        assert kinds[-1] == "done" and "error" not in kinds
    assert "text" in [kind for kind, _ in events["a"]]
    assert events["c"] == [("error", events["c"][0][1])] and events["c"][0][1].status == 500

    # The batch fails after a's answer has streamed: a cannot be rerun (a second answer could not continue the
    # text it was sent), so it ends with an error; b, which streamed nothing, is rerun.
    events.clear()
    run(job("a", stream=True), job("b", stream=False), job("c", stream=False, fails_on="answer"))
    assert events["a"][-1][0] == "error" and "done" not in [kind for kind, _ in events["a"]]
    assert [value for kind, value in events["b"] if kind == "stage"] == ["interpret", "answer"]
    assert events["b"][-1][0] == "done"
