"""The HTTP application: OpenAI's chat and completions endpoints, models, health, stats and the page at ``/``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ..logs import get_logger
from ..messages import Message, Trace
from .batcher import Batcher, Job
from .protocol import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    SamplingRequest,
    chunk,
    finish_reason,
    new_id,
    now,
    stage_event,
    trace_body,
    usage,
)

log = get_logger(__name__)

DISCONNECT_POLL_S = 0.5
UNPARSABLE_BODY = "There was an error parsing the body"  # FastAPI's detail, fastapi/routing.py
MAX_REQUEST_BYTES = 2 << 20
"""The largest request body read (2 MiB: a 500,000-word prompt); a larger one is answered 413 unread."""


class BodyLimit:
    """ASGI middleware: a request whose body is over ``limit`` bytes is answered 413 before it is parsed.

    A body that states its length is judged by it; one sent in chunks is read up to the limit first (at
    most ``limit`` bytes held), then handed on whole.
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                return await self.refuse(send)
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self.refuse(send)
            if not message.get("more_body"):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return await self.app(scope, _replay([whole], receive), send)

    async def refuse(self, send) -> None:
        error = ApiError(413, f"the request body is over {self.limit} bytes", None, "request_too_large")
        body = json.dumps(error.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict], then=None):
    """An ASGI ``receive`` that hands out ``messages`` first, then what ``then`` receives."""

    async def receive():
        if messages:
            return messages.pop(0)
        return await then() if then is not None else {"type": "http.disconnect"}

    return receive


def build_app(
    batcher: Batcher,
    *,
    stop_timeout_s: float = 30.0,
    default_stack: str | None = None,
    max_request_bytes: int = MAX_REQUEST_BYTES,
) -> FastAPI:
    """The app serving ``batcher``'s stacks; it starts the batcher's thread and stops it after the last request."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await asyncio.to_thread(batcher.stop, stop_timeout_s)

    app = FastAPI(title="fslm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, limit=max_request_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        return JSONResponse(validation_error(error.errors(), content_type).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        if error.status_code == 400 and error.detail == UNPARSABLE_BODY:
            # FastAPI's answer when decoding fails before JSON parsing does: bad UTF-8, nesting too deep.
            message = "the request body is not valid JSON (not UTF-8, or nested too deeply)"
            return JSONResponse(ApiError(400, message, None, "invalid_json").body(), 400)
        code = "not_found" if error.status_code == 404 else None
        return JSONResponse(ApiError(error.status_code, str(error.detail), None, code).body(), error.status_code)

    @app.get("/health")
    async def health() -> JSONResponse:
        status = {"ready": 200, "loading": 503, "stopping": 503}.get(batcher.state, 500)
        body = {"status": "ok" if batcher.state == "ready" else batcher.state, "stacks": sorted(batcher.stacks)}
        if default_stack is not None:
            body["default"] = default_stack
        if batcher.error:
            body["error"] = batcher.error
        return JSONResponse(body, status_code=status)

    @app.get("/v1/models")
    async def models() -> dict:
        created = int(batcher.started)
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "fslm",
                    "fslm_stages": [stage.name for stage in stack.stages],
                }
                for name, stack in sorted(batcher.stacks.items())
            ],
        }

    @app.get("/fslm/stats")
    async def stats() -> dict:
        return batcher.stats()

    page_html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
    page_headers = page_security_headers(page_html)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html, headers=page_headers)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        stack = batcher.stack(body.model)
        prompt = body.prompt()
        # Counting a long prompt's tokens takes seconds: off the event loop, so other requests go on.
        await asyncio.to_thread(batcher.check_prompt, body.model, prompt, "messages")
        settings = body.final_settings(stack.final_stage.generation)
        run = Submission(batcher, body, [prompt], settings)
        if body.stream:
            return stream_response(run, request, chat_stream(run))
        traces = await run.wait(request)
        if traces is None:
            return Response(status_code=499)
        trace = traces[0]
        reply = {
            "index": 0,
            "message": {"role": "assistant", "content": trace.answer or ""},
            "finish_reason": finish_reason(trace, settings),
            "logprobs": None,
        }
        extra = {"usage": usage(traces)}
        if body.fslm_trace:
            extra["fslm_trace"] = trace_body(trace)
        return JSONResponse(chunk("chat.completion", run.id, body.model, run.created, [reply], **extra))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        stack = batcher.stack(body.model)
        prompts = body.prompts()
        for prompt in prompts:
            await asyncio.to_thread(batcher.check_prompt, body.model, prompt, "prompt")
        settings = body.final_settings(stack.final_stage.generation)
        run = Submission(batcher, body, prompts, settings)
        if body.stream:
            return stream_response(run, request, completion_stream(run))
        traces = await run.wait(request)
        if traces is None:
            return Response(status_code=499)
        choices = []
        for index, trace in enumerate(traces):
            choice = {
                "index": index,
                "text": trace.answer or "",
                "finish_reason": finish_reason(trace, settings),
                "logprobs": None,
            }
            if body.fslm_trace:
                choice["fslm_trace"] = trace_body(trace)
            choices.append(choice)
        return JSONResponse(chunk("text_completion", run.id, body.model, run.created, choices, usage=usage(traces)))

    return app


def validation_error(errors: list[dict], content_type: str = "application/json") -> ApiError:
    """OpenAI's error body for the first problem pydantic found, naming the field as the client wrote it."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    location = [str(part) for part in first.get("loc", ()) if part != "body" and not _union_branch(part)]
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON: {first.get('msg')}", None, "invalid_json")
    if not location and "json" not in content_type.lower():
        return ApiError(
            400,
            f"send the request body as JSON with the header Content-Type: application/json (got {content_type!r})",
            None,
            "invalid_content_type",
        )
    param = ".".join(location) or None
    if first.get("type") == "missing":
        return ApiError(400, f"missing required field: {param}", param, "missing_field")
    return ApiError(400, f"{param or 'body'}: {first.get('msg')}", param, "invalid_value")


class Submission:
    """A request's jobs in the batcher, and the events they report, read on the request's event loop."""

    def __init__(self, batcher: Batcher, body: SamplingRequest, prompts: list[str], settings):
        self.body = body
        self.settings = settings
        self.id = new_id("chatcmpl" if isinstance(body, ChatRequest) else "cmpl")
        self.created = now()
        self.events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.jobs = []
        for index, prompt in enumerate(prompts):

            def report(event, index=index):
                loop.call_soon_threadsafe(self.events.put_nowait, (index, *event))

            self.jobs.append(Job(body.model, prompt, settings, body.seed, body.stream, report))
        for job in self.jobs:
            batcher.submit(job)

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancelled.set()

    async def events_until_done(self) -> AsyncIterator[tuple[int, str, object]]:
        """Every event of every job, until each has finished; an error ends the submission."""
        pending = len(self.jobs)
        while pending:
            index, kind, payload = await self.events.get()
            if kind == "error":
                self.cancel()
                raise payload  # type: ignore[misc]
            if kind == "done":
                pending -= 1
            yield index, kind, payload

    async def wait(self, request: Request) -> list[Trace] | None:
        """Each job's trace, in order; None when the client left first (its jobs are cancelled)."""
        traces: dict[int, Trace] = {}
        while len(traces) < len(self.jobs):
            try:
                # Waiting on the queue, not on events_until_done: a timeout may cancel a queue read safely.
                index, kind, payload = await asyncio.wait_for(self.events.get(), DISCONNECT_POLL_S)
            except TimeoutError:
                if await request.is_disconnected():
                    self.cancel()
                    return None
                continue
            if kind == "error":
                self.cancel()
                raise payload  # type: ignore[misc]
            if kind == "done":
                traces[index] = payload  # type: ignore[assignment]
        return [traces[index] for index in range(len(self.jobs))]


def stream_response(run: Submission, request: Request, events: AsyncIterator[dict]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        except ApiError as error:
            yield f"data: {json.dumps(error.body())}\n\n"
        finally:
            run.cancel()  # a client that left frees its rows; a finished run has nothing left to cancel
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class FinalText:
    """The final stage's text as it grows, turned into deltas that add up to the final answer."""

    def __init__(self) -> None:
        self.sent = ""

    def delta(self, text: str) -> str:
        if not text.startswith(self.sent):
            return ""  # the tokenizer re-read earlier text differently; the finished message settles it
        new, self.sent = text[len(self.sent) :], text
        return new


async def chat_stream(run: Submission) -> AsyncIterator[dict]:
    body = run.body
    text = FinalText()

    def piece(delta: dict, reason: str | None = None, **extra) -> dict:
        choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        return chunk("chat.completion.chunk", run.id, body.model, run.created, [choice], **extra)

    yield piece({"role": "assistant", "content": ""})
    async for _, kind, payload in run.events_until_done():
        if kind == "text":
            delta = text.delta(payload)  # type: ignore[arg-type]
            if delta:
                yield piece({"content": delta})
        elif kind == "stage":
            message: Message = payload  # type: ignore[assignment]
            if body.fslm_trace:
                yield chunk(
                    "chat.completion.chunk", run.id, body.model, run.created, [], fslm_stage=stage_event(message)
                )
        elif kind == "done":
            trace: Trace = payload  # type: ignore[assignment]
            rest = text.delta(trace.answer or "")
            if rest:
                yield piece({"content": rest})
            extra = {"fslm_trace": trace_body(trace)} if body.fslm_trace else {}
            yield piece({}, finish_reason(trace, run.settings), **extra)
            if body.include_usage:
                yield chunk("chat.completion.chunk", run.id, body.model, run.created, [], usage=usage([trace]))


async def completion_stream(run: Submission) -> AsyncIterator[dict]:
    body = run.body
    texts = [FinalText() for _ in run.jobs]
    finished: list[Trace] = []

    def piece(index: int, text: str, reason: str | None = None, **extra) -> dict:
        choice = {"index": index, "text": text, "finish_reason": reason, "logprobs": None}
        return chunk("text_completion", run.id, body.model, run.created, [choice], **extra)

    async for index, kind, payload in run.events_until_done():
        if kind == "text":
            delta = texts[index].delta(payload)  # type: ignore[arg-type]
            if delta:
                yield piece(index, delta)
        elif kind == "stage" and body.fslm_trace:
            yield chunk("text_completion", run.id, body.model, run.created, [], fslm_stage=stage_event(payload))  # type: ignore[arg-type]
        elif kind == "done":
            trace: Trace = payload  # type: ignore[assignment]
            finished.append(trace)
            rest = texts[index].delta(trace.answer or "")
            if rest:
                yield piece(index, rest)
            extra = {"fslm_trace": trace_body(trace)} if body.fslm_trace else {}
            yield piece(index, "", finish_reason(trace, run.settings), **extra)
    if body.include_usage:
        yield chunk("text_completion", run.id, body.model, run.created, [], usage=usage(finished))


def _union_branch(part) -> bool:
    """pydantic names the branch of a union it tried (``str``, ``list[TextPart]``); the client wrote none."""
    return isinstance(part, str) and (part in {"str", "int", "float", "bool", "dict", "list"} or "[" in part)


def page_security_headers(html: str) -> dict[str, str]:
    """The page may run its own inline script and style and talk to this server, nothing else; no framing."""
    import base64
    import hashlib
    import re

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        digests = [base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() for block in blocks]
        return " ".join(f"'sha256-{digest}'" for digest in digests)

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}
