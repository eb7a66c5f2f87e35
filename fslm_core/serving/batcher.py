"""Concurrent requests, run through each stage together: a short collection window, a bounded batch.

One thread runs the stacks, one batch at a time (the CPU's cores are shared
by every row of a batch, so two batches at once would only slow both). A
batch holds the requests that were waiting when it started and those that
keep arriving, until none has come for ``window_s`` (at most ten windows after
the first), up to ``max_batch``; whatever arrives after a batch has started
waits for the next, so no request waits for a later one. Requests whose
final stage samples differently (``temperature``, ``max_tokens``, ``stop``,
``seed``) run as separate groups of the batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..declarations import GenerationSettings, Stack, Stage
from ..errors import FslmError, InputError
from ..logs import get_logger
from ..messages import Message, Trace
from ..plugins import Registry, get_registry
from ..runtime import bind_stack, check_stack, prompt_tokens, run_stack
from ..runtime.listener import RunListener
from ..runtime.pool import ModelPool
from ..runtime.stage_cache import StageCache
from .protocol import ApiError

log = get_logger(__name__)

#: What a job reports to its request: ("stage", Message), ("text", str) with the final stage's text so
#: far, then ("done", Trace) or ("error", ApiError).
Event = tuple[str, object]


@dataclass
class Job:
    """One prompt of one request, on its way through a stack."""

    stack: str
    prompt: str
    settings: GenerationSettings  # the final stage's, after the request's overrides
    seed: int | None
    stream: bool
    report: Callable[[Event], None]  # called from the batcher's thread
    cancelled: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.monotonic)
    # What the request has been sent, so a batch rerun after a failure sends nothing twice.
    reported_stages: set[str] = field(default_factory=set)
    streamed_text: bool = False

    def group(self) -> tuple:
        """Jobs of one group share every backend call; a sampling seed only matters when sampling."""
        return (self.stack, self.settings, None if self.settings.greedy else self.seed)


class JobsListener(RunListener):
    """Passes a run's messages and the final stage's growing text to each job's request."""

    def __init__(self, jobs: list[Job], final: str, final_streams: bool = True):
        self.jobs = jobs
        self.final = final
        # A cascade's final stage may be overruled by its fallback: its text is not the answer until then.
        self.any_streams = final_streams and any(job.stream for job in jobs)

    def streams(self, stage: Stage) -> bool:
        return self.any_streams and stage.name == self.final

    def on_text(self, index: int, stage: str, text: str) -> bool:
        job = self.jobs[index]
        if job.cancelled.is_set():
            return False
        if job.stream:
            job.streamed_text = True
            job.report(("text", text))
        return True

    def on_message(self, index: int, message: Message) -> None:
        job = self.jobs[index]
        if message.stage not in job.reported_stages:
            job.report(("stage", message))
            job.reported_stages.add(message.stage)  # once delivered: a report that raised is sent again

    def cancelled(self, index: int) -> bool:
        return self.jobs[index].cancelled.is_set()


_STOP = object()
WINDOWS_AT_MOST = 10


class Batcher:
    """Owns the served stacks' models and the thread that runs batches of jobs through them."""

    def __init__(
        self,
        stacks: dict[str, Stack],
        *,
        max_batch: int = 64,
        window_s: float = 0.05,
        seed: int = 0,
        cache: StageCache | None = None,
        registry: Registry | None = None,
        pool: ModelPool | None = None,
    ):
        if not stacks:
            raise InputError("serve: give at least one stack")
        if max_batch < 1:
            raise InputError("serve: max_batch must be at least 1")
        self.stacks = stacks
        self.max_batch = max_batch
        self.window_s = window_s
        self.seed = seed
        self.cache = cache
        self.registry = registry or get_registry()
        self.pool = pool or ModelPool()
        self.state = "loading"
        self.error: str | None = None
        self.started = time.time()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="fslm-batcher", daemon=True)
        self._bound: dict = {}
        self.batch_sizes: Counter[int] = Counter()
        self.recent_batches: deque[dict] = deque(maxlen=256)
        self.served = 0
        self.failed = 0
        for name, stack in stacks.items():
            check_stack(stack, self.registry)  # unknown names and missing weights fail before the server starts
            log.debug("stack checked", stack=name)

    # Life cycle -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the jobs already queued, then end the thread (waiting at most ``timeout`` seconds)."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.state == "loading" and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
        return self.state == "ready"

    # Requests ---------------------------------------------------------------

    def stack(self, name: str, param: str = "model") -> Stack:
        if name not in self.stacks:
            served = ", ".join(sorted(self.stacks))
            raise ApiError(404, f"model {name!r} is not served here; served: {served}", param, "model_not_found")
        return self.stacks[name]

    def check_prompt(self, name: str, prompt: str, param: str) -> None:
        """Refuse a prompt longer than the smallest context of the stack's models (once they are loaded)."""
        bound = self._bound.get(name)
        if bound is None:
            return
        for item in bound.stages.values():
            if item.backend is None:  # a tool stage reads what it is given
                continue
            context = getattr(item.backend, "max_sequence_length", None) or item.backend.spec.context_length
            if not context:
                continue
            tokens = prompt_tokens(item.backend, prompt)
            if tokens is not None and tokens >= context:
                raise ApiError(
                    400,
                    f"the prompt takes {tokens} tokens; stage {item.stage.name!r} reads at most {context}",
                    param,
                    "context_length_exceeded",
                )

    def submit(self, job: Job) -> None:
        if self.state in ("failed", "stopping"):
            raise ApiError(503, f"the server is {self.state}: {self.error or 'not taking requests'}")
        self._queue.put(job)

    def stats(self) -> dict:
        return {
            "state": self.state,
            "served": self.served,
            "failed": self.failed,
            "queued": self._queue.qsize(),
            "batch_sizes": {str(size): count for size, count in sorted(self.batch_sizes.items())},
            "recent_batches": list(self.recent_batches),
        }

    # The thread -------------------------------------------------------------

    def _work(self) -> None:
        try:
            for name, stack in self.stacks.items():
                started = time.perf_counter()
                self._bound[name] = bind_stack(stack, self.registry, self.pool)
                log.info("stack loaded", stack=name, seconds=round(time.perf_counter() - started, 2))
            self.state = "ready"
        except Exception as error:  # noqa: BLE001 - reported by /health and every request
            self.state, self.error = "failed", f"{type(error).__name__}: {error}"
            log.error("loading failed", error=self.error)
            self._fail_queued()
            return
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stopping = self._collect(first)
            self._run_batch(batch)
            if stopping:
                break
        self.state = "stopping"

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        """``first`` and the jobs arriving while requests keep coming, up to the maximum.

        The batch closes once no job has arrived for ``window_s``, and at the
        latest ``WINDOWS_AT_MOST`` windows after ``first`` arrived: clients that
        start together trickle in over more than one window, and a batch of all
        of them runs much faster than two smaller ones.
        """
        batch = [first]
        latest = first.arrived + self.window_s * WINDOWS_AT_MOST
        deadline = min(first.arrived + self.window_s, latest)
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            batch.append(job)
            deadline = min(time.monotonic() + self.window_s, latest)
        return batch, False

    def _run_batch(self, batch: list[Job]) -> None:
        live = [job for job in batch if not job.cancelled.is_set()]
        if live:
            self.batch_sizes[len(live)] += 1
        groups: dict[tuple, list[Job]] = {}
        for job in live:
            groups.setdefault(job.group(), []).append(job)
        started = time.perf_counter()
        for jobs in groups.values():
            self._run_group(jobs)
        if live:
            self.recent_batches.append(
                {"size": len(live), "groups": len(groups), "seconds": round(time.perf_counter() - started, 3)}
            )

    def _run_group(self, jobs: list[Job]) -> None:
        try:
            traces = self._run(jobs)
        except Exception as error:  # noqa: BLE001 - isolate the request at fault, keep serving
            if len(jobs) > 1:
                log.warning("batch failed; running its requests one by one", error=str(error), requests=len(jobs))
                for job in jobs:
                    if job.streamed_text:  # part of its answer is sent: a rerun's answer could not continue it
                        self._fail(job, error)
                    else:
                        self._run_group([job])
                return
            self._fail(jobs[0], error)
            return
        for job, trace in zip(jobs, traces):
            if job.cancelled.is_set():
                continue
            self.served += 1
            job.report(("done", trace))

    def _fail(self, job: Job, error: Exception) -> None:
        self.failed += 1
        status = 400 if isinstance(error, FslmError) else 500
        log.error("request failed", error=f"{type(error).__name__}: {error}")
        job.report(("error", ApiError(status, f"{type(error).__name__}: {error}")))

    def _run(self, jobs: list[Job]) -> list[Trace]:
        first = jobs[0]
        stack = self.stacks[first.stack]
        final = stack.final_stage
        if first.settings != final.generation:
            replaced = final.model_copy(update={"generation": first.settings})
            stages = [replaced if stage.name == final.name else stage for stage in stack.stages]
            stack = stack.model_copy(update={"stages": stages})
        return run_stack(
            stack,
            [job.prompt for job in jobs],
            batch_size=self.max_batch,
            seed=self.seed if first.settings.greedy or first.seed is None else first.seed,
            registry=self.registry,
            pool=self.pool,
            cache=self.cache,
            listener=JobsListener(jobs, final.name, final_streams=not (stack.fallback and stack.fallback.generation)),
        )

    def _fail_queued(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                job.report(("error", ApiError(503, f"the server failed to load: {self.error}")))
