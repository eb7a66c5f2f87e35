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
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property

from ..api.backends import Generation, ModelBackend, ModelSpec, TokenizedBackend
from ..api.formats import Constraint, MessageFormat
from ..api.routers import Router, declared_rules
from ..declarations import PROMPT_FIELD, GenerationSettings, Stack, Stage, set_stack_runner, with_dtype
from ..errors import DeclarationError, InputError, StageOutputError
from ..logs import get_logger
from ..messages import Message, Trace
from ..plugins import Registry, get_registry
from ..progress import progress_bar
from .constraints import check_constraint
from .listener import RunListener
from .pool import ModelPool, check_installed, default_pool, in_dtype, with_local_weights
from .stage_cache import StageCache, adapter_identity, model_identity, stage_key

MISSING_MESSAGE = "(none)"

log = get_logger(__name__)


@dataclass(frozen=True)
class BoundStage:
    """A stage with what it runs on: its loaded base, adapter and format."""

    stage: Stage
    backend: ModelBackend
    adapter_name: str | None
    format: MessageFormat
    constraint: Constraint | None = None  # what decoding holds the output to, when enforcement is on

    def constraint_for(self, enforce_formats: bool) -> Constraint | None:
        """The constraint this run holds the stage to: none when the run or the stage turns enforcement off."""
        return self.constraint if enforce_formats and self.stage.enforce_format else None


@dataclass(frozen=True)
class BoundStack:
    stack: Stack
    router: Router
    stages: dict[str, BoundStage]

    @cached_property
    def formats(self) -> dict[str, MessageFormat]:
        """Each stage's message format by stage name (what `stage_input` renders reads with)."""
        return {name: item.format for name, item in self.stages.items()}

    @cached_property
    def empty_when_unparsed(self) -> frozenset[str]:
        """Stages whose readers get nothing from a message that did not parse (``on_parse_error: empty``)."""
        return frozenset(name for name, item in self.stages.items() if item.stage.on_parse_error == "empty")


def check_stack(stack: Stack, registry: Registry | None = None) -> list[ModelSpec]:
    """Check every name a stack uses and that its weights are installed, loading nothing; return each stage's spec.

    Each spec is in the dtype the stack's ``dtype`` means for it on this
    machine, so stages of one dtype share a loaded base and stages of two do not.
    :func:`bind_stack` calls it first, so a mistake in the last stage is
    reported before the first stage's model takes its time to load.
    """
    registry = registry or get_registry()
    router = registry.router(stack.router, field="router")
    for rule, field in declared_rules(stack).items():
        if rule not in router.applies:
            takers = [name for name in registry.names("routers") if rule in registry.router(name).applies]
            raise DeclarationError(
                f"{field}: router {router.name!r} does not apply {rule}; set the stack's router to one that does "
                f"({', '.join(takers)})"
            )
    specs = []
    for index, stage in enumerate(stack.stages):
        where = f"stages.{index}"
        spec = with_local_weights(registry.model(stage.model, field=f"{where}.model"), stage.model_path)
        spec = in_dtype(spec, stack.dtype)
        message_format = registry.format(stage.format, field=f"{where}.format")
        check_schema(stage, message_format, f"{where}.json_schema")
        registry.backend(spec.backend, field=f"{where}.model")
        check_installed(spec)
        specs.append(spec)
    return specs


def check_schema(stage: Stage, message_format: MessageFormat, field: str) -> None:
    """A declared ``json_schema`` needs a format that takes one, and must compile to something decoding enforces."""
    if stage.json_schema is None:
        return
    if not message_format.takes_schema:
        raise DeclarationError(
            f"{field}: format {message_format.name!r} takes no schema; set the stage's format to json "
            "or remove the schema"
        )
    constraint = message_format.constraint(stage.json_schema)
    if constraint is not None:
        check_constraint(constraint, field)


def bind_stack(stack: Stack, registry: Registry | None = None, pool: ModelPool | None = None) -> BoundStack:
    """Resolve names through the registry, load each base once and attach adapters."""
    registry = registry or get_registry()
    pool = pool or default_pool
    specs = check_stack(stack, registry)
    router = registry.router(stack.router, field="router")
    bound: dict[str, BoundStage] = {}
    for index, (stage, spec) in enumerate(zip(stack.stages, specs, strict=True)):
        where = f"stages.{index}"
        message_format = registry.format(stage.format, field=f"{where}.format")
        backend = pool.get(spec, registry.backend(spec.backend, field=f"{where}.model"))
        adapter_name = backend.attach_adapter(stage.adapter) if stage.adapter else None
        constraint = message_format.constraint(stage.json_schema)
        bound[stage.name] = BoundStage(stage, backend, adapter_name, message_format, constraint)
    return BoundStack(stack, router, bound)


def default_template(stage: Stage) -> str:
    """The prompt, then each read message under a heading naming its stage."""
    parts = [f"User request:\n{{{PROMPT_FIELD}}}"]
    parts += [f"From the {read} step:\n{{{read}}}" for read in stage.reads]
    return "\n\n".join(parts)


def stage_input(
    stage: Stage,
    trace: Trace,
    formats: dict[str, MessageFormat],
    prompt: str | None = None,
    empty_when_unparsed: Collection[str] = (),
) -> str:
    """The text a stage reads for one trace: its template filled with the prompt (or ``prompt``) and messages.

    A message that did not parse reads as its raw text, or as nothing when its
    stage is in ``empty_when_unparsed``.
    """
    values = {PROMPT_FIELD: trace.prompt if prompt is None else prompt}
    for read in stage.reads:
        message = trace.message(read)
        if message is None:
            values[read] = MISSING_MESSAGE
        elif message.parse_error is not None and read in empty_when_unparsed:
            values[read] = ""
        else:
            values[read] = formats[read].render(message.text, message.fields)
    return (stage.template or default_template(stage)).format_map(values)


def stage_instruction(stage: Stage, message_format: MessageFormat) -> str:
    """The stage's instruction plus what its message format asks of the layout."""
    if message_format.instructions:
        return f"{stage.instruction} {message_format.instructions}"
    return stage.instruction


def render_stage_prompt(bound: BoundStack, stage: Stage, trace: Trace, prompt: str | None = None) -> str:
    """The full model input of a stage for one trace, laid out by its backend; ``prompt`` replaces the trace's."""
    item = bound.stages[stage.name]
    return item.backend.render_prompt(
        stage_instruction(stage, item.format),
        stage_input(stage, trace, bound.formats, prompt, bound.empty_when_unparsed),
    )


def stage_budget(item: BoundStage) -> int | None:
    """Most tokens a stage's rendered prompt may take: its ``max_prompt_tokens``, within its model's context.

    None when neither the stage nor its model says.
    """
    settings = item.stage.generation
    backend = item.backend
    context = backend.spec.context_length
    if context is None and isinstance(backend, TokenizedBackend):
        context = backend.max_sequence_length
    budgets = [settings.max_prompt_tokens, context - settings.max_new_tokens if context else None]
    budgets = [budget for budget in budgets if budget is not None]
    return max(min(budgets), 1) if budgets else None


def prompt_tokens(backend: ModelBackend, text: str) -> int | None:
    """Tokens ``text`` takes as a generation prompt of ``backend``; None if the backend cannot count them."""
    if isinstance(backend, TokenizedBackend):
        return len(backend.encode(text))
    try:
        return backend.count_tokens(text)
    except NotImplementedError:
        return None


@dataclass(frozen=True)
class FittedPrompt:
    """A stage's rendered prompt within its budget, and how much of the user's prompt it kept."""

    text: str
    tokens: int | None
    budget: int | None
    kept_characters: int | None = None  # set when the user's prompt was cut


def fit_stage_prompt(bound: BoundStack, stage: Stage, trace: Trace) -> FittedPrompt:
    """The stage's prompt for ``trace``; a user prompt too long for the stage's budget is cut from its start.

    The end of the prompt is kept (a request usually ends with its question);
    the instruction, template and read messages are kept whole. The share of
    characters kept follows the share of the prompt's tokens that fit, cut
    again if the first cut was not enough.
    """
    item = bound.stages[stage.name]
    text = render_stage_prompt(bound, stage, trace)
    budget = stage_budget(item)
    # A token is at least one byte for the tokenizers fslm meets: short prompts need no count.
    if budget is None or len(text.encode("utf-8")) + 8 <= budget:
        return FittedPrompt(text, None, budget)
    tokens = prompt_tokens(item.backend, text)
    if tokens is None or tokens <= budget:
        return FittedPrompt(text, tokens, budget)
    prompt = trace.prompt
    for _ in range(8):
        own = prompt_tokens(item.backend, prompt) or len(prompt)
        keep = own - (tokens - budget)  # the prompt's tokens that fit
        # Keep that share of its characters, a little less: token lengths vary along a text.
        kept = int(len(prompt) * keep / own * 0.97) if keep > 0 else 0
        prompt = prompt[len(prompt) - kept :] if kept else ""
        space = prompt.find(" ", 0, 16)  # start at a word
        prompt = prompt[space + 1 :] if space >= 0 else prompt
        text = render_stage_prompt(bound, stage, trace, prompt)
        tokens = prompt_tokens(item.backend, text) or 0
        if tokens <= budget or not prompt:
            break
    return FittedPrompt(text, tokens, budget, kept_characters=len(prompt))


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
                model=stage.model,
                adapter=str(stage.adapter) if stage.adapter else None,
                prompt_tokens=generation.prompt_tokens,
                completion_tokens=generation.completion_tokens,
                latency_s=generation.latency_s,
                batch_size=generation.batch_size,
                cached=hit,
                mean_logprob=None if generation.mean_logprob is None else min(generation.mean_logprob, 0.0),
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
    """Stages of a wave that can share one backend call: same base model and generation settings."""
    groups: dict[tuple[int, GenerationSettings], list[Stage]] = defaultdict(list)
    for stage in wave:
        groups[(id(bound.stages[stage.name].backend), stage.generation)].append(stage)
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


def report_cuts(cuts: dict[str, dict[str, FittedPrompt]]) -> None:
    """One warning for all the prompts a run had to cut."""
    fitted = [prompt for by_stage in cuts.values() for prompt in by_stage.values()]
    log.warning(
        "prompt longer than its stages read: cut from its start, its end kept"
        if len(cuts) == 1
        else f"{len(cuts)} prompts longer than their stages read: cut from their start, their ends kept",
        prompt_characters=max(len(prompt) for prompt in cuts),
        kept_characters=min(prompt.kept_characters for prompt in fitted),
        stage_budget_tokens=min(prompt.budget for prompt in fitted),
        stages=sorted({stage for by_stage in cuts.values() for stage in by_stage}),
        hint="a stage's generation.max_prompt_tokens (fslm run --max-prompt-tokens) sets the budget",
    )


set_stack_runner(run_stack)
