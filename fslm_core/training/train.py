"""Per-stage LoRA fine-tuning of a stack on distilled targets.

Each stage learns one thing: given its input as the engine builds it (its
template filled with the prompt and the *targets* of the stages it reads,
rendered by its backend with its instruction), write its target message. The
loss counts the target tokens only. One LoRA adapter per stage is trained on
the stage's base model with peft; the base weights stay frozen and are shared.

Stages train one after the other in :mod:`.loop`, into the output folder
laid out in :mod:`.output`. Every save goes to a temporary name first and is renamed into place, so an
interrupted run leaves only whole files. Rerunning the same command skips the
stages whose adapters exist and continues the stage in progress from its
last checkpoint (same epoch, same batch, same optimizer and random state).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..api.backends import ModelSpec
from ..declarations import STACK_FILE_NAME, Stack, validate_stack, with_dtype
from ..distillation.distilled_data import DistilledData, load_distilled
from ..errors import InputError
from ..logs import get_logger
from ..plugins import Registry, get_registry
from ..runtime import bind_stack, check_stack
from ..runtime.pool import ModelPool
from ..runtime.scoring import encode_example, require_tokenized_backend
from ..runtime.stack_choice import resolve_stack
from ..validation import with_overrides
from .config import TrainConfig
from .examples import split_examples, stage_pairs
from .loop import TrainingRun, train_stage
from .output import ADAPTERS_DIR, STATE, adapter_done, check_output, stack_identity
from .results import StageTraining, TrainResult, TrainStep
from .stage_scores import score_stages
from .start_from import adapter_fingerprints, start_adapters
from .upstream import GeneratedUpstream, with_upstream_inputs

log = get_logger(__name__)


def _without_adapters(stack: Stack) -> Stack:
    data = stack.model_dump()
    for stage in data["stages"]:
        stage["adapter"] = None
    return validate_stack(data, source=f"stack {stack.name!r}")


def _with_adapters(stack: Stack, adapters: dict[str, Path]) -> Stack:
    data = stack.model_dump()
    for stage in data["stages"]:
        if stage["name"] in adapters:
            stage["adapter"] = adapters[stage["name"]]
    return validate_stack(data, source=f"stack {stack.name!r}")


def train_stack(
    distilled: str | os.PathLike | DistilledData,
    output: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    stack: Stack | None = None,
    model: str | None = None,
    model_path: str | Path | None = None,
    progress: bool = True,
    registry: Registry | None = None,
    pool: ModelPool | None = None,
    on_step: Callable[[TrainStep], None] | None = None,
    **settings: Any,
) -> TrainResult:
    """Train one LoRA adapter per stage on distilled targets and save the trained stack in ``output``.

    :param distilled: a folder written by :func:`fslm_core.training.distill` (or its loaded data).
    :param stack: the stack to train; by default the distilled decomposition built for ``model``
        (default: the embedded model).
    :param settings: override fields of ``config`` (``epochs=1``, ``rank=16``...).
    :param pool: where base models are loaded; by default a pool of its own, so the
        caller's loaded models are not touched.
    :param on_step: called after every batch with a :class:`TrainStep`.

    Rerunning with the same arguments resumes an interrupted run.
    """
    config = with_overrides(TrainConfig, config, settings, "training settings")
    registry = registry or get_registry()
    data = distilled if isinstance(distilled, DistilledData) else load_distilled(distilled)
    stack = resolve_stack(stack, None if stack else data.decomposition, model, model_path, registry=registry)
    plain = with_dtype(_without_adapters(stack), config.dtype)
    distilled_stages = set(data.stage_names)
    to_train = list(config.stages) if config.stages else [stage.name for stage in stack.stages if not stage.tool]
    for name in to_train:
        if name not in {stage.name for stage in stack.stages}:
            raise InputError(f"stages: {name!r} is not a stage of stack {stack.name!r}")
        if stack.stage(name).tool:
            raise InputError(f"stages: {name!r} is a tool stage ({stack.stage(name).tool}); it has nothing to train")
        needed = [name, *stack.stage(name).reads]
        missing = [item for item in needed if item not in distilled_stages]
        if missing:
            raise InputError(
                f"stage {name!r}: the distilled data in {data.folder} has no targets for {missing}; "
                f"it holds {sorted(distilled_stages)} (decomposition {data.decomposition!r})"
            )
    folder = Path(output).expanduser().resolve()
    config_identity = config.identity()
    changed_dtypes = _changed_dtypes(plain, to_train, registry)
    if changed_dtypes:
        config_identity["dtype"] = changed_dtypes
    start = start_adapters(config.start_from.expanduser(), to_train) if config.start_from else {}
    if start:
        config_identity["start_from"] = adapter_fingerprints(start)
    identity = {"stack": stack_identity(plain), "config": config_identity, "data": data.fingerprint}
    state = check_output(folder, identity)

    examples = data.examples()
    train_examples, held_out = split_examples(examples, config.eval_fraction, config.max_eval_examples, config.seed)
    pool = pool or ModelPool()
    bound = bind_stack(plain, registry, pool)
    for name in to_train:
        require_tokenized_backend(bound.stages[name].backend, name)
        if _has_adapters(bound.stages[name].backend.model):
            raise InputError(
                f"stage {name!r}: the pool's copy of {stack.stage(name).model!r} already has adapters attached; "
                "train with a fresh ModelPool (the default)"
            )
    run = TrainingRun(config, folder, bound, progress, on_step)
    done = {name for name in to_train if adapter_done(folder / ADAPTERS_DIR / name)}
    run.accelerator.wait_for_everyone()  # every process has seen which stages are done before any writes
    state = state or {"identity": identity, "stages": {}}
    if run.main:
        folder.mkdir(parents=True, exist_ok=True)
        STATE.write(folder, state)

    results: dict[str, StageTraining] = {}
    for index, stage in enumerate(stack.stages):
        name = stage.name
        if name not in to_train:
            continue
        if name in done:
            previous = state["stages"].get(name)
            if previous:
                results[name] = StageTraining.model_validate({**previous, "already_trained": True})
            log.info("stage already trained; skipped", stage=name)
            continue
        stage_examples = train_examples
        if config.upstream_inputs != "targets" and stage.reads:
            # Built per stage: it must run every earlier stage with the adapter it has now.
            finished = {n: folder / ADAPTERS_DIR / n for n in to_train if adapter_done(folder / ADAPTERS_DIR / n)}
            generated = GeneratedUpstream(_with_adapters(plain, finished), folder, train_examples, registry)
            stage_examples = with_upstream_inputs(
                train_examples, plain, name, config.upstream_inputs, generated, config.seed
            )
        pairs = stage_pairs(bound, name, stage_examples)
        if not pairs:
            raise InputError(f"stage {name!r}: no training example has a non-empty target in {data.folder}")
        backend = bound.stages[name].backend
        max_length = _max_length(config.max_length, backend)
        encoded = [encode_example(backend, prompt, target, max_length) for prompt, target in pairs]
        results[name] = train_stage(run, index, name, encoded, start.get(name))
        state["stages"][name] = results[name].model_dump(mode="json", exclude={"already_trained"})
        if run.main:
            STATE.write(folder, state)

    adapters = {name: folder / ADAPTERS_DIR / name for name in to_train if adapter_done(folder / ADAPTERS_DIR / name)}
    trained = _with_adapters(stack, adapters)
    evaluation: dict[str, dict[str, float]] = {}
    if run.main:
        stack_file = trained.save(folder)
        if held_out and config.evaluators:
            evaluation = score_stages(
                with_dtype(trained, plain.dtype),  # scored on the bases it trained on, already loaded
                data,
                [example.example_id for example in held_out],
                evaluators=config.evaluators,
                batch_size=config.eval_batch_size,
                max_length=config.max_length,
                registry=registry,
                pool=pool,
                stages=to_train,
            )
            state["evaluation"] = evaluation
            STATE.write(folder, state)
    else:
        stack_file = folder / STACK_FILE_NAME
    run.accelerator.wait_for_everyone()
    return TrainResult(
        output=folder, stack_file=stack_file, stages=results, held_out_examples=len(held_out), evaluation=evaluation
    )


def _changed_dtypes(plain: Stack, to_train: list[str], registry: Registry) -> dict[str, str]:
    """Trained stages whose dtype setting changes what their model loads in, and the dtype it loads in."""
    specs = check_stack(plain, registry)
    return {
        stage.name: _computes_in(spec)
        for stage, spec in zip(plain.stages, specs, strict=True)
        if stage.name in to_train and _computes_in(spec) != _computes_in(registry.model(stage.model))
    }


def _computes_in(spec: ModelSpec) -> str:
    return spec.dtype if spec.quantize == "none" else spec.quantize


def _has_adapters(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _max_length(configured: int, backend) -> int:
    """The configured length, capped by what the model can attend to."""
    limits = [configured]
    if backend.spec.context_length:
        limits.append(backend.spec.context_length)
    positions = getattr(getattr(backend.model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    return min(limits)


def is_main_process() -> bool:
    """False in the extra processes of ``accelerate launch`` / torchrun (they print nothing)."""
    return int(os.environ.get("RANK", "0")) == 0
