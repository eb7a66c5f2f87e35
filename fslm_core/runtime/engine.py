"""The engine: run a stack over many prompts, stage by stage, in batches.

The path of a prompt, one function per step:

1. :func:`bind_stack` resolves each stage's model id, format and router
   through the registry, loads each base model once (``ModelPool``) and
   attaches each stage's adapter to its base.
2. The router splits the stack into waves of stages that may run together.
3. For each wave, :func:`stage_input` and :func:`render_stage_prompt` build
   every (stage, prompt) input from the prompt and the messages the stage reads;
   inputs for the same base model and generation settings go to the backend
   as one batched call, each row with its own stage's adapter.
4. :func:`record_messages` turns generations into :class:`Message` s on each
   trace; the final stage's message is the answer.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

from ..api.backends import Generation
from ..declarations import GenerationSettings, Stack, Stage, set_stack_runner, with_dtype
from ..errors import InputError, StageOutputError
from ..logs import get_logger
from ..messages import Message, Trace
from ..plugins import Registry
from ..progress import progress_bar
from .binding import BoundStack, BoundStage, bind_stack
from .cascade import defer_uncertain
from .listener import RunListener
from .pool import ModelPool
from .prompt_fitting import FittedPrompt, fit_stage_prompt, report_cuts
from .stage_cache import StageCache, adapter_identity, model_identity, stage_key
from .stage_inputs import stage_input
from .tool_runs import run_tool
from .voting import answer_keys, vote_on

log = get_logger(__name__)


def record_messages(
    bound: BoundStack,
    jobs: Sequence[tuple[Stage, Trace]],
    generations: Sequence[Generation],
    cached: Sequence[bool] | None = None,
) -> None:
    cached = cached or [False] * len(jobs)
    for (stage, trace), generation, hit in zip(jobs, generations, cached, strict=True):
        item = bound.stages[stage.name]
        fields, parse_error = parsed(item, generation.text)
        if parse_error is not None and stage.on_parse_error == "fail":
            raise StageOutputError(
                f"stage {stage.name!r} wrote text its {item.format.name} format cannot parse ({parse_error}) "
                f"for prompt {trace.prompt[:60]!r}; the stage's on_parse_error is fail (keep-text or empty go on)"
            )
        trace.messages.append(
            Message(
                stage=stage.name,
                text=generation.text,
                fields=fields,
                parse_error=parse_error,
                model=stage.model or f"tool:{stage.tool}",
                adapter=str(stage.adapter) if stage.adapter else item.backend and item.backend.server_adapter,
                prompt_tokens=generation.prompt_tokens,
                completion_tokens=generation.completion_tokens,
                latency_s=generation.latency_s,
                batch_size=generation.batch_size,
                cached=hit,
                mean_logprob=None if generation.mean_logprob is None else min(generation.mean_logprob, 0.0),
                min_logprob=generation.min_logprob,
                p10_logprob=generation.p10_logprob,
                votes=generation.votes,
            )
        )


def parsed(item: BoundStage, text: str) -> tuple[dict | None, str | None]:
    """A message's fields, and why its stage's format could not read them (None when it could, or has none).

    Fields that parse but break the stage's schema are kept, with the error: a reader may still use some.
    """
    fields = item.format.parse(text)
    if fields is None:
        if not item.format.structured:
            return None, None
        return None, f"not {item.format.name} output: {item.format.description}" if text else "empty output"
    return fields, item.format.check(fields, item.stage.json_schema)


def batch_groups(bound: BoundStack, wave: Sequence[Stage]) -> list[list[Stage]]:
    """Stages of a wave that can share one backend call: same base model and generation settings.

    A tool stage is a group of its own.
    """
    groups: dict[tuple, list[Stage]] = defaultdict(list)
    for stage in wave:
        key = ("tool", stage.name) if stage.tool else (id(bound.stages[stage.name].backend), stage.generation)
        groups[key].append(stage)
    return list(groups.values())


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """The prompts as a list, refusing an empty list or an empty prompt."""
    if isinstance(prompts, str):
        raise InputError("prompts must be a list of strings, not one string")
    prompts = list(prompts)
    if not prompts:
        raise InputError("no prompts given: the prompt list is empty")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"prompt {index} is empty")
    return prompts


def run_stack(
    stack: Stack,
    prompts: Sequence[str],
    *,
    batch_size: int = 16,
    seed: int | None = 0,
    progress: bool = False,
    registry: Registry | None = None,
    pool: ModelPool | None = None,
    cache: StageCache | None = None,
    listener: RunListener | None = None,
    dtype: str | None = None,
    enforce_formats: bool = True,
) -> list[Trace]:
    """Run ``stack`` over ``prompts`` and return one trace per prompt, in order.

    :param batch_size: inputs per backend generate call.
    :param seed: seeds sampling stages (greedy stages do not depend on it); None leaves the RNG alone.
    :param progress: show a progress bar over (stage, prompt) steps.
    :param cache: greedy stages read what they wrote before for the same input from it, and write what
        they generate into it; such messages are marked ``cached`` in the trace.
    :param listener: hears each message as it is recorded and, for the stages it asks for, the text as it
        is generated; inputs it reports cancelled run no further stages.
    :param enforce_formats: hold each structured stage's output to its format while decoding (a stage may
        still turn it off for itself); False only asks for the layout, to measure what enforcing gives.
    :param dtype: ``auto``, ``float32``, ``bfloat16`` or ``int8`` in place of the stack's own ``dtype``.
    """
    prompts = check_prompts(prompts)
    stack = with_dtype(stack, dtype)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    bound = bind_stack(stack, registry, pool)
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)
    traces = [Trace(stack=stack.name, prompt=prompt) for prompt in prompts]
    listener = listener or RunListener()
    position = {id(trace): index for index, trace in enumerate(traces)}
    order = {stage.name: index for index, stage in enumerate(stack.stages)}
    cuts: dict[str, dict[str, FittedPrompt]] = defaultdict(dict)  # prompt -> stage -> its cut prompt
    bar = progress_bar(total=len(stack.stages) * len(traces), desc=stack.name, unit="step", show=progress)
    with bar:
        for wave in bound.router.waves(stack):
            for group in batch_groups(bound, wave):
                jobs = routed_jobs(bound, group, traces, listener, position)
                bar.set_description(f"{stack.name}: {', '.join(stage.name for stage in group)}")
                bar.update(len(group) * len(traces) - len(jobs))
                if not jobs:
                    continue
                started = time.perf_counter()
                if group[0].tool is not None:
                    item = bound.stages[group[0].name]
                    inputs = [
                        stage_input(stage, trace, bound.formats, None, bound.empty_when_unparsed)
                        for stage, trace in jobs
                    ]
                    generations, cached = run_tool(item.tool, group[0], inputs, cache)
                    bar.update(len(jobs))
                else:
                    fitted = [fit_stage_prompt(bound, stage, trace) for stage, trace in jobs]
                    for (stage, trace), prompt in zip(jobs, fitted):
                        if prompt.kept_characters is not None:
                            cuts[trace.prompt][stage.name] = prompt
                    stream = stream_to(listener, jobs, position)
                    generations, cached = generate_or_reuse(
                        bound, group, jobs, fitted, batch_size, cache, bar.update, stream, enforce_formats
                    )
                record_messages(bound, jobs, generations, cached)
                for stage, trace in jobs:
                    listener.on_message(position[id(trace)], trace.message(stage.name))
                    decision = bound.router.after_stage(stack, stage, trace)
                    if decision is not None:
                        trace.routing.append(decision)
                log.debug(
                    "stages ran",
                    stages=[stage.name for stage in group],
                    inputs=len(jobs),
                    completion_tokens=sum(g.completion_tokens for g in generations),
                    seconds=round(time.perf_counter() - started, 3),
                )
    if cuts:
        report_cuts(cuts)
    for trace in traces:
        trace.messages.sort(key=lambda message: order[message.stage])
        trace.answer = answer_of(trace)
    if stack.fallback is not None:
        defer_uncertain(
            stack,
            traces,
            run_stack,
            registry,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            pool=pool,
            cache=cache,
            enforce_formats=enforce_formats,
        )
    return traces


def exited(trace: Trace) -> bool:
    return any(decision.decision == "exit" for decision in trace.routing)


def answer_of(trace: Trace) -> str | None:
    """The message of the stage where the input left the stack, else of the last stage that ran for it."""
    for decision in trace.routing:
        if decision.decision == "exit":
            return trace.message(decision.stage).text
    return trace.messages[-1].text if trace.messages else None


def routed_jobs(
    bound: BoundStack,
    group: Sequence[Stage],
    traces: Sequence[Trace],
    listener: RunListener,
    position: dict[int, int],
) -> list[tuple[Stage, Trace]]:
    """The (stage, input) pairs of a group that run: not left, not cancelled, not skipped by the router."""
    jobs = []
    for stage in group:
        for trace in traces:
            if exited(trace) or listener.cancelled(position[id(trace)]):
                continue
            decision = bound.router.before_stage(bound.stack, stage, trace)
            if decision is not None:
                trace.routing.append(decision)
                continue
            jobs.append((stage, trace))
    return jobs


def stream_to(listener: RunListener, jobs: Sequence[tuple[Stage, Trace]], position: dict[int, int]):
    """The backend's text callback for ``jobs`` (job index, text) -> keep going, or None if no stage streams."""
    streamed = {stage.name for stage, _ in jobs if listener.streams(stage)}
    if not streamed:
        return None

    def on_text(job: int, text: str) -> bool:
        stage, trace = jobs[job]
        return stage.name not in streamed or listener.on_text(position[id(trace)], stage.name, text)

    return on_text


CACHE_WRITE_ROWS = 128


def generate_or_reuse(
    bound: BoundStack,
    group: Sequence[Stage],
    jobs: Sequence[tuple[Stage, Trace]],
    fitted: Sequence[FittedPrompt],
    batch_size: int,
    cache: StageCache | None,
    on_batch,
    on_text=None,
    enforce_formats: bool = True,
) -> tuple[list[Generation], list[bool]]:
    """One backend call for the jobs of a group that ``cache`` does not answer; which came from the cache.

    ``on_text(job, text)`` hears each job's text as it grows, when the backend can stream it. Each row
    is held to its own stage's format constraint, so a group may mix free and structured stages.
    """
    backend = bound.stages[group[0].name].backend
    settings = group[0].generation
    constraints = [bound.stages[stage.name].constraint_for(enforce_formats) for stage, _ in jobs]
    if not backend.enforces_formats and any(constraints):
        log.warning(
            "backend cannot enforce formats: they are only asked for",
            backend=backend.name,
            stages=sorted({stage.name for (stage, _), held in zip(jobs, constraints) if held}),
        )
        constraints = [None] * len(jobs)
    if any(stage.samples > 1 for stage in group):
        generations = sample_and_vote(bound, jobs, fitted, constraints, settings, batch_size, on_batch)
        return generations, [False] * len(jobs)
    keys: list[str | None] = [None] * len(jobs)
    hits: dict[str, Generation] = {}
    if cache is not None and settings.greedy:
        model = model_identity(backend.spec)
        adapters = {stage.name: adapter_identity(stage.adapter) for stage in group}  # once per stage, not per row
        keys = [
            stage_key(model, adapters[stage.name], prompt.text, settings, held.key if held else None)
            for (stage, _), prompt, held in zip(jobs, fitted, constraints)
        ]
        hits = cache.get_many(keys)
        on_batch(sum(key in hits for key in keys))
    todo = [index for index, key in enumerate(keys) if key not in hits]
    # With a cache, rows go in slices that are written as they finish: an interrupted run keeps most of its work.
    step = max(CACHE_WRITE_ROWS, batch_size) if cache is not None else max(len(todo), 1)
    generated: dict[int, Generation] = {}
    for start in range(0, len(todo), step):
        chunk = todo[start : start + step]
        options = {}
        if on_text is not None and backend.streams_text:
            options["on_text"] = lambda row, text, chunk=chunk: on_text(chunk[row], text)
        if any(constraints[index] for index in chunk):
            options["constraints"] = [constraints[index] for index in chunk]
        fresh = backend.generate(
            [fitted[index].text for index in chunk],
            [bound.stages[jobs[index][0].name].adapter_name for index in chunk],
            settings,
            batch_size,
            on_batch=on_batch,
            **options,
        )
        generated.update(zip(chunk, fresh))
        if cache is not None and settings.greedy:
            cache.put_many({keys[index]: generation for index, generation in zip(chunk, fresh)})
    generations = [generated[index] if index in generated else hits[keys[index]] for index in range(len(jobs))]
    return generations, [index not in generated for index in range(len(jobs))]


def sample_and_vote(
    bound: BoundStack,
    jobs: Sequence[tuple[Stage, Trace]],
    fitted: Sequence[FittedPrompt],
    constraints: Sequence,
    settings: GenerationSettings,
    batch_size: int,
    on_batch=None,
) -> list[Generation]:
    """Each job's stage samples ``samples`` outputs (rows of one backend call); its vote keeps one per job.

    ``on_batch(n)`` hears of jobs as their rows' batches finish (in whole jobs, rows counted evenly), so a
    long sampling stage moves the progress bar as it goes, not only at its end.
    """
    backend = bound.stages[jobs[0][0].name].backend
    rows = [index for index, (stage, _) in enumerate(jobs) for _ in range(stage.samples)]
    options = {"constraints": [constraints[index] for index in rows]} if any(constraints) else {}
    progress = {"rows": 0, "jobs": 0}

    def rows_done(count: int) -> None:
        progress["rows"] += count
        jobs_done = min(len(jobs), progress["rows"] * len(jobs) // len(rows))
        if on_batch is not None and jobs_done > progress["jobs"]:
            on_batch(jobs_done - progress["jobs"])
            progress["jobs"] = jobs_done

    samples = backend.generate(
        [fitted[index].text for index in rows],
        [bound.stages[jobs[index][0].name].adapter_name for index in rows],
        settings,
        batch_size,
        on_batch=rows_done,
        **options,
    )
    rows_done(len(rows) - progress["rows"])
    by_job: dict[int, list[Generation]] = defaultdict(list)
    for index, sample in zip(rows, samples, strict=True):
        by_job[index].append(sample)
    generations = []
    for index, (stage, _) in enumerate(jobs):
        item = bound.stages[stage.name]
        if stage.samples == 1:
            generations.append(by_job[index][0])
            continue
        keys = answer_keys([sample.text for sample in by_job[index]], stage.vote, item.vote_tool)
        generations.append(vote_on(by_job[index], keys))
    return generations


set_stack_runner(run_stack)
