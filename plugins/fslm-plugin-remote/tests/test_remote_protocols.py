"""The remote backend against local stub servers that check what each protocol sends: vLLM's and LoRAX's
request shapes (no GPU here to run them), retries, refusals before any request, a server that goes away."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fslm_plugin_remote.http import RemoteServerError
from fslm_plugin_remote.targets import parse_target, target_id

from fslm_core import Stack, Stage
from fslm_core.errors import DeclarationError, ModelLoadError
from fslm_core.runtime import ModelPool

BASE = "smollm2-135m-instruct"


class Stub:
    """A server answering each (method, path) with a canned JSON body; it records every request body."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.requests: list[tuple[str, str, dict | None]] = []
        self.failures_left = 0  # answer 503 this many times first
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                stub.requests.append((method, self.path, body))
                if stub.failures_left > 0:
                    stub.failures_left -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                route = stub.routes.get((method, self.path))
                if route is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                payload = json.dumps(route(body) if callable(route) else route).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self.answer("GET")

            def do_POST(self):
                self.answer("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    servers = []

    def start(routes):
        servers.append(Stub(routes))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def one_stage(model_id: str) -> Stack:
    stage = Stage(name="answer", model=model_id, instruction="Answer briefly.", generation={"max_new_tokens": 5})
    return Stack(name="remote", stages=[stage])


def test_remote_ids_name_the_server_protocol_adapter_and_base():
    model_id = f"remote:llama.cpp?url=http://127.0.0.1:8080/&base={BASE}&adapter=interpret&concurrency=8"
    target = parse_target(model_id)
    assert (target.protocol, target.url, target.base, target.adapter, target.concurrency) == (
        "llama.cpp",
        "http://127.0.0.1:8080",
        BASE,
        "interpret",
        8,
    )
    assert parse_target(target_id(target)) == target
    for bad, message in [
        ("remote:grpc?url=http://x&base=b", "protocol 'grpc'"),
        ("remote:openai?base=b", "give url="),
        ("remote:openai?url=ftp://x&base=b", "not an http"),
        ("remote:openai?url=http://x&base=b&adaptor=a", "unknown field(s) ['adaptor']"),
        ("remote:openai?url=http://x&base=b&concurrency=0", "above 0"),
    ]:
        with pytest.raises(DeclarationError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            parse_target(bad)


def test_openai_compatible_requests_name_the_adapter_as_the_model_and_send_token_ids(stub):
    def completion(body):
        return {
            "choices": [{"text": " Paris.\nQ: more", "logprobs": {"token_logprobs": [-0.1, -0.5, -2.0]}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 3},
        }

    server = stub(
        {("GET", "/v1/models"): {"data": [{"id": BASE}, {"id": "interpret"}]}, ("POST", "/v1/completions"): completion}
    )
    stack = one_stack = one_stage(f"remote:openai?url={server.url}&base={BASE}&adapter=interpret")
    stack = one_stack.model_copy(
        update={
            "stages": (
                one_stack.stages[0].model_copy(
                    update={"generation": one_stack.stages[0].generation.model_copy(update={"stop": ("\nQ:",)})}
                ),
            )
        }
    )
    (trace,) = stack.run(["What is the capital of France?"], pool=ModelPool())
    message = trace.messages[0]
    assert trace.answer == "Paris." and message.completion_tokens == 3
    assert message.min_logprob == -2.0 and message.mean_logprob == pytest.approx(-2.6 / 3)
    (_, _, body) = next(r for r in server.requests if r[1] == "/v1/completions")
    assert body["model"] == "interpret" and body["max_tokens"] == 5 and body["temperature"] == 0.0
    assert body["stop"] == ["\nQ:"] and body["logprobs"] == 1
    assert isinstance(body["prompt"], list) and all(isinstance(t, int) for t in body["prompt"])
    assert message.prompt_tokens == len(body["prompt"])


def test_lorax_requests_carry_the_adapter_id_and_the_text(stub):
    server = stub(
        {
            ("GET", "/info"): {"model_id": "base"},
            ("POST", "/generate"): {
                "generated_text": "Paris",
                "details": {"generated_tokens": 2, "tokens": [{"logprob": -0.2}, {"logprob": -0.4}]},
            },
        }
    )
    stack = one_stage(f"remote:lorax?url={server.url}&base={BASE}&adapter=me/interpret")
    (trace,) = stack.run(["Capital of France?"], pool=ModelPool())
    assert trace.answer == "Paris" and trace.messages[0].completion_tokens == 2
    (_, _, body) = next(r for r in server.requests if r[1] == "/generate")
    assert body["parameters"]["adapter_id"] == "me/interpret" and body["parameters"]["do_sample"] is False
    assert body["parameters"]["max_new_tokens"] == 5 and body["parameters"]["details"] is True
    assert "<|im_start|>system\nAnswer briefly." in body["inputs"]  # the local chat template, as text


def test_an_unknown_adapter_is_refused_before_any_completion_request(stub):
    server = stub({("GET", "/v1/models"): {"data": [{"id": BASE}]}})
    with pytest.raises(ModelLoadError, match="model 'interpret' is not served \\(served: smollm2-135m-instruct\\)"):
        one_stage(f"remote:openai?url={server.url}&base={BASE}&adapter=interpret").run(["Hi"], pool=ModelPool())
    assert [path for _, path, _ in server.requests] == ["/v1/models"]


def test_busy_answers_are_retried_and_a_server_that_is_gone_is_named(stub):
    server = stub({("GET", "/info"): {}, ("POST", "/generate"): {"generated_text": "ok", "details": {}}})
    server.failures_left = 2  # two 503s, then answers
    (trace,) = one_stage(f"remote:lorax?url={server.url}&base={BASE}").run(["Hi"], pool=ModelPool())
    assert trace.answer == "ok" and len(server.requests) == 4
    gone = server.url
    server.close()
    with pytest.raises(ModelLoadError, match=f"lorax server {gone}, no adapter: the server is not ready"):
        one_stage(f"remote:lorax?url={gone}&base={BASE}").run(["Hi"], pool=ModelPool())


def test_a_server_error_mid_run_stops_the_stage_with_the_server_named(stub):
    server = stub({("GET", "/info"): {}})  # /generate answers 404
    with pytest.raises(
        RemoteServerError, match=f"lorax server {server.url}, no adapter: POST .*/generate answered 404"
    ):
        one_stage(f"remote:lorax?url={server.url}&base={BASE}").run(["Hi"], pool=ModelPool())
    # The first failed row ends the stage: the rows still queued behind it are never sent.
    server.requests.clear()
    with pytest.raises(RemoteServerError, match="answered 404"):
        one_stage(f"remote:lorax?url={server.url}&base={BASE}&concurrency=2").run(["Hi"] * 40, pool=ModelPool())
    assert sum(path == "/generate" for _, path, _ in server.requests) <= 4
