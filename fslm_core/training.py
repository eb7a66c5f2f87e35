"""Per-stage LoRA fine-tuning of a stack on distilled targets.

Each stage learns one thing: given its input as the engine builds it (its
template filled with the prompt and the *targets* of the stages it reads,
rendered by its backend with its instruction), write its target message. The
loss counts the target tokens only. One LoRA adapter per stage is trained on
the stage's base model with peft; the base weights stay frozen and are shared.

The training loop is a plain torch loop driven by accelerate, so the same code
runs on one CPU, one GPU, or several processes under ``accelerate launch``
(data parallel; each process takes every n-th batch). It does what a generic
trainer cannot do for this task: batches of similar length (little padding),
and logits computed only at target positions (the vocabulary projection of
prompt tokens is skipped), which makes it faster than HF Trainer on the same
data (see ``benchmarks/train_throughput.py``).

Output folder::

    stack.yaml                the trained stack; stages point to their adapters
    adapters/<stage>/         standard PEFT folders (PeftModel.from_pretrained)
    training.json             settings, per-stage losses and the evaluation
    checkpoints/<stage>/      the stage in progress (removed when it finishes)

Every save goes to a temporary name first and is renamed into place, so an
interrupted run leaves only whole files. Rerunning the same command skips the
stages whose adapters exist and continues the stage in progress from its
last checkpoint (same epoch, same batch, same optimizer and random state).
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from .api.backends import ModelBackend
from .declarations import STACK_FILE_NAME, Stack, load_stack, validate_stack
from .distillation import DistilledData, DistilledExample, load_distilled, targets_trace
from .errors import AdapterError, FslmError, InputError
from .files import (
    atomic_write_json,
    existing_run_state,
    read_versioned_json,
    replace_folder,
    temporary_folder,
    temporary_name,
    write_folder_atomically,
)
from .logs import get_logger
from .plugins import Registry, get_registry, resolve_stack
from .runtime.devices import default_device
from .runtime.engine import BoundStack, bind_stack, render_stage_prompt
from .runtime.pool import ModelPool
from .runtime.scoring import (
    EncodedExample,
    collate,
    encode_example,
    require_tokenized_backend,
    slices_logits,
    target_loss,
)
from .validation import validate_settings, with_overrides

TRAIN_FORMAT = 1
STATE_NAME = "training.json"
ADAPTERS_DIR = "adapters"
CHECKPOINTS_DIR = "checkpoints"

log = get_logger(__name__)


class TrainConfig(BaseModel):
    """Hyperparameters of per-stage LoRA training. The defaults suit 100M-1B models on a few thousand examples."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(default=8, gt=0, description="LoRA rank: capacity of each adapter.")
    alpha: float = Field(default=16, gt=0, description="LoRA scaling numerator (alpha / rank scales the update).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA path.")
    target_modules: tuple[str, ...] | None = Field(
        default=None,
        description="Modules to adapt; None uses the model spec's lora_target_modules, else peft's default.",
    )
    learning_rate: float = Field(default=2e-4, gt=0.0)
    epochs: int = Field(default=2, gt=0)
    batch_size: int = Field(default=8, gt=0, description="Examples per batch and process.")
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    max_length: int = Field(
        default=512, ge=8, description="Tokens of prompt plus target; prompts are cut from the left."
    )
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    max_grad_norm: float | None = Field(default=1.0, gt=0.0)
    seed: int = 0
    mixed_precision: Literal["no", "fp16", "bf16"] | None = Field(
        default=None, description="Autocast on GPUs; None takes accelerate's setting (launcher or config), else none."
    )
    stages: tuple[str, ...] | None = Field(default=None, description="Train only these stages; None trains all.")
    eval_fraction: float = Field(
        default=0.05,
        ge=0.0,
        lt=1.0,
        description="Share of distilled examples held out of training to score each stage.",
    )
    max_eval_examples: int = Field(default=64, ge=0)
    evaluators: tuple[str, ...] = Field(
        default=("target-loss", "token-f1"), description="Registered evaluators run per stage."
    )
    eval_batch_size: int = Field(default=8, gt=0)
    checkpoint_every: int = Field(default=100, gt=0, description="Optimizer steps between checkpoints.")
    log_every: int = Field(default=10, gt=0, description="Optimizer steps between loss log lines.")

    def identity(self) -> dict:
        """The settings that decide the adapters: a resumed run must use the same."""
        return self.model_dump(
            mode="json",
            exclude={"stages", "evaluators", "eval_batch_size", "checkpoint_every", "log_every"},
        )


# Examples as tokens ---------------------------------------------------------------


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indices per batch for one epoch: shuffled, then grouped by length to pad little.

    Within each window of 32 batches the examples are sorted by length; the
    batches are then shuffled, so the order is random but padding is small.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 32
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda index: -lengths[index])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def process_share(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's batches; every process gets the same count (data parallel steps in lockstep)."""
    if world == 1:
        return batches
    padded = batches + batches[: (-len(batches)) % world]
    return padded[rank::world]


def split_examples(
    examples: Sequence[DistilledExample], eval_fraction: float, max_eval: int, seed: int
) -> tuple[list[DistilledExample], list[DistilledExample]]:
    """Training and held-out examples; the same for the same data and seed."""
    count = len(examples)
    held = min(round(count * eval_fraction), max_eval)
    if eval_fraction > 0 and max_eval > 0 and count >= 2:
        held = max(held, 1)
    held = min(held, count - 1)
    ids = sorted(example.example_id for example in examples)
    random.Random(seed).shuffle(ids)
    held_out = set(ids[:held])
    return [e for e in examples if e.example_id not in held_out], [e for e in examples if e.example_id in held_out]


def stage_pairs(bound: BoundStack, stage_name: str, examples: Sequence[DistilledExample]) -> list[tuple[str, str]]:
    """(model input, target) of one stage for each example with a non-empty target.

    The input is built by the engine from the prompt and the targets of the
    stages this stage reads, as if those stages had written them.
    """
    stage = bound.stack.stage(stage_name)
    formats = bound.formats
    pairs = []
    for example in examples:
        target = example.targets.get(stage_name, "").strip()
        if not target:
            continue
        upstream = {name: example.targets[name] for name in stage.reads if name in example.targets}
        trace = targets_trace(bound.stack.name, example.prompt, upstream, formats, stage.model)
        pairs.append((render_stage_prompt(bound, stage, trace), target))
    return pairs


# Results ---------------------------------------------------------------------------


class StageTraining(BaseModel):
    """How one stage's adapter was trained."""

    stage: str
    adapter: Path
    examples: int = Field(description="Training examples with a non-empty target.")
    epochs: int
    steps: int = Field(description="Batches per process over all epochs.")
    losses: list[float] = Field(description="Training loss of each batch (mean over processes).")
    tokens: int = Field(description="Tokens read (prompt + target, no padding), all processes.")
    target_tokens: int
    seconds: float = Field(description="Wall time of the training loop.")
    resumed_from_step: int | None = Field(default=None, description="Batch the last run resumed from, if it resumed.")
    already_trained: bool = Field(default=False, description="The adapter existed; this run did not train it.")

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def _window(self) -> int:
        return max(1, min(10, len(self.losses) // 4))

    @property
    def first_loss(self) -> float | None:
        return sum(self.losses[: self._window()]) / self._window() if self.losses else None

    @property
    def final_loss(self) -> float | None:
        return sum(self.losses[-self._window() :]) / self._window() if self.losses else None


class TrainResult(BaseModel):
    """A trained stack: where it is saved, how each stage trained and how each scores on held-out examples."""

    output: Path
    stack_file: Path
    stages: dict[str, StageTraining]
    held_out_examples: int
    evaluation: dict[str, dict[str, float]] = Field(default_factory=dict, description="Stage -> metric -> score.")

    def render(self) -> str:
        metrics = sorted({name for scores in self.evaluation.values() for name in scores})
        header = ["stage", "examples", "first loss", "final loss", "tokens/s", *metrics]
        rows = []
        for name, stage in self.stages.items():
            first, final = stage.first_loss, stage.final_loss
            row = [
                name,
                str(stage.examples),
                f"{first:.3f}" if first is not None else "-",
                f"{final:.3f}" if final is not None else "-",
                f"{stage.tokens_per_second:.0f}" if not stage.already_trained else "(earlier run)",
            ]
            scores = self.evaluation.get(name, {})
            row += [f"{scores[m]:.3f}" if m in scores else "-" for m in metrics]
            rows.append(row)
        widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in [header, *rows]]
        lines.insert(1, "  ".join("-" * width for width in widths))
        weakest = weakest_stage(self.evaluation)
        if weakest:
            lines.append(f"weakest stage on {self.held_out_examples} held-out examples: {weakest}")
        lines.append(f"trained stack: {self.stack_file}")
        return "\n".join(lines)


def weakest_stage(evaluation: dict[str, dict[str, float]]) -> str | None:
    """The stage with the lowest text overlap with its targets (else the highest target loss)."""
    for metric, worst in (("token_f1", min), ("target_loss", max)):
        scored = {stage: scores[metric] for stage, scores in evaluation.items() if metric in scores}
        if scored:
            stage = worst(scored, key=scored.get)
            return f"{stage} ({metric} {scored[stage]:.3f})"
    return None


@dataclass(frozen=True)
class TrainStep:
    """Passed to ``on_step`` after every batch, on every process."""

    stage: str
    epoch: int
    step: int  # batch index within the epoch
    global_step: int  # batches of this stage so far
    optimizer_step: int
    loss: float


# Output folder ------------------------------------------------------------------


def _stack_identity(stack: Stack) -> dict:
    data = stack.model_dump(mode="json", exclude={"description"})
    for stage in data["stages"]:
        stage.pop("adapter", None)
    return data


def _read_state(folder: Path) -> dict | None:
    return read_versioned_json(
        folder / STATE_NAME,
        "fslm_train",
        TRAIN_FORMAT,
        "a training state of fslm",
        field="output: ",
        remedy="remove it or choose another folder",
    )


def _check_output(folder: Path, identity: dict) -> dict | None:
    """The training state to continue, or None for a fresh folder; an error if the folder holds something else."""

    def check_stack(folder: Path) -> None:
        if not (folder / STACK_FILE_NAME).is_file():
            return
        try:
            existing = load_stack(folder)
        except FslmError as error:
            raise InputError(
                f"output: {folder} holds a stack that does not load ({error}); choose another folder"
            ) from None
        if _stack_identity(existing) != identity["stack"]:
            raise InputError(
                f"output: {folder} already holds a different stack ({existing.name!r}); "
                "choose another folder or remove it"
            )

    state = existing_run_state(folder, STATE_NAME, _read_state, " for the trained stack", check_folder=check_stack)
    if state is None:
        return None
    previous = state.get("identity", {})
    for key, what in (("stack", "stack"), ("config", "training settings"), ("data", "distilled data")):
        if previous.get(key) != identity[key]:
            detail = ""
            if key == "config":
                changed = sorted(k for k in identity[key] if previous.get(key, {}).get(k) != identity[key][k])
                detail = f" (changed: {', '.join(changed)})"
            raise InputError(
                f"output: {folder} holds a training run with different {what}{detail}; "
                "rerun with the same settings to resume, or choose another folder"
            )
    return state


def _adapter_done(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def save_adapter(peft_model, folder: Path) -> None:
    """Save the LoRA weights and config as a standard PEFT folder."""
    with warnings.catch_warnings():
        # peft looks for the base's config.json to see whether the vocabulary changed (it never does
        # here); a base read from a GGUF file has none, and the warning would repeat for every save.
        warnings.filterwarnings("ignore", message="Could not find a config file")
        peft_model.save_pretrained(str(folder))


# Training -------------------------------------------------------------------------


class _Run:
    """Everything one ``train_stack`` call shares between stages."""

    def __init__(self, config: TrainConfig, output: Path, bound: BoundStack, progress: bool, on_step):
        from accelerate import Accelerator

        self.config = config
        self.output = output
        self.bound = bound
        self.progress = progress
        self.on_step = on_step
        self.accelerator = Accelerator(cpu=default_device().type == "cpu", mixed_precision=config.mixed_precision)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process


def _lora_config(config: TrainConfig, backend: ModelBackend):
    from peft import LoraConfig

    targets = config.target_modules or backend.spec.lora_target_modules
    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(targets) if targets else None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def _rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _latest_checkpoint(root: Path) -> Path | None:
    steps = sorted(path for path in root.glob("step-*") if (path / "state.pt").is_file())
    return steps[-1] if steps else None


def _save_checkpoint(run: _Run, stage: str, model, optimizer, scheduler, progress: dict) -> None:
    """Adapter weights, optimizer, scheduler, position and each process's random state, renamed in whole."""
    import torch

    accelerator = run.accelerator
    root = run.output / CHECKPOINTS_DIR / stage
    final = root / f"step-{progress['optimizer_step']:08d}"
    tmp = temporary_folder(final) if run.main else temporary_name(final)
    if run.main:
        tmp.mkdir()
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if run.main:
        save_adapter(accelerator.unwrap_model(model), tmp / "adapter")
        torch.save(
            {
                **progress,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "num_processes": accelerator.num_processes,
            },
            tmp / "state.pt",
        )
        replace_folder(tmp, final)
        for older in root.glob("step-*"):
            if older != final:
                shutil.rmtree(older, ignore_errors=True)
    accelerator.wait_for_everyone()


def _load_checkpoint(run: _Run, stage: str, peft_model, optimizer, scheduler) -> dict | None:
    """Restore a stage in progress; None if it has no usable checkpoint."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    checkpoint = _latest_checkpoint(run.output / CHECKPOINTS_DIR / stage)
    if checkpoint is None:
        return None
    state = torch.load(checkpoint / "state.pt", weights_only=False)
    if state["num_processes"] != run.accelerator.num_processes:
        log.warning(
            "checkpoint was written with another number of processes; the stage restarts",
            stage=stage,
            checkpoint=str(checkpoint),
            then=state["num_processes"],
            now=run.accelerator.num_processes,
        )
        return None
    set_peft_model_state_dict(peft_model, load_file(str(checkpoint / "adapter" / "adapter_model.safetensors")))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_file = checkpoint / f"rng-{run.accelerator.process_index}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=False))
    log.info(
        "resuming stage from checkpoint",
        stage=stage,
        checkpoint=checkpoint.name,
        epoch=state["epoch"],
        step=state["step"],
    )
    return state


def _train_stage(run: _Run, stage_index: int, stage_name: str, examples: list[EncodedExample]) -> StageTraining:
    import torch
    from peft import get_peft_model
    from transformers import get_linear_schedule_with_warmup, set_seed

    config, accelerator = run.config, run.accelerator
    backend = run.bound.stages[stage_name].backend
    # Seeded per stage, so a stage trains the same whether or not earlier stages ran in this process.
    set_seed(config.seed + stage_index)
    try:
        peft_model = get_peft_model(backend.model, _lora_config(config, backend))
    except ValueError as error:
        raise AdapterError(
            f"stage {stage_name!r}: LoRA does not fit model {backend.spec.id!r} ({str(error).splitlines()[0]}); "
            "set target_modules (CLI: --target-modules) to module names of this model"
        ) from None
    slice_logits = slices_logits(peft_model)
    lengths = [len(example) for example in examples]
    steps_per_epoch = len(
        process_share(
            epoch_batches(lengths, config.batch_size, config.seed, 0),
            accelerator.process_index,
            accelerator.num_processes,
        )
    )
    updates_per_epoch = math.ceil(steps_per_epoch / config.gradient_accumulation_steps)
    total_updates = updates_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    # Rounded down: a short run gets no warmup instead of a first update at learning rate 0.
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_updates), total_updates)
    progress = {
        "epoch": 0,
        "step": 0,
        "optimizer_step": 0,
        "losses": [],
        "tokens": 0,
        "target_tokens": 0,
        "seconds": 0.0,
    }
    resumed = _load_checkpoint(run, stage_name, peft_model, optimizer, scheduler)
    if resumed:
        progress.update({key: resumed[key] for key in progress})
    resumed_from = progress["epoch"] * steps_per_epoch + progress["step"] if resumed else None
    # The scheduler is stepped here once per update; accelerate's wrapper would step it once per process.
    model, optimizer = accelerator.prepare(peft_model, optimizer)
    model.train()
    pad_id = backend.tokenizer.pad_token_id if backend.tokenizer.pad_token_id is not None else 0
    log.info(
        "training stage",
        stage=stage_name,
        examples=len(examples),
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        processes=accelerator.num_processes,
        resumed_from_step=resumed_from,
    )
    bar = tqdm(
        total=steps_per_epoch * config.epochs,
        initial=progress["epoch"] * steps_per_epoch + progress["step"],
        desc=stage_name,
        unit="batch",
        disable=not (run.progress and run.main),
    )
    device = accelerator.device
    with bar:
        for epoch in range(progress["epoch"], config.epochs):
            batches = process_share(
                epoch_batches(lengths, config.batch_size, config.seed, epoch),
                accelerator.process_index,
                accelerator.num_processes,
            )
            first = progress["step"] if epoch == progress["epoch"] else 0
            for step in range(first, len(batches)):
                started = time.perf_counter()
                batch = collate([examples[i] for i in batches[step]], pad_id, device)
                update = (step + 1) % config.gradient_accumulation_steps == 0 or step + 1 == len(batches)
                with nullcontext() if update else accelerator.no_sync(model):
                    with accelerator.autocast():
                        loss_sum, count = target_loss(model, batch, slice_logits)
                    loss = loss_sum / max(count, 1)
                    accelerator.backward(loss / config.gradient_accumulation_steps)
                if update:
                    if config.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    progress["optimizer_step"] += 1
                counts = torch.tensor(
                    [loss.detach().float().item(), int(batch["attention_mask"].sum()), count], device=device
                )
                if accelerator.num_processes > 1:
                    counts = accelerator.reduce(counts, reduction="sum")
                    counts[0] /= accelerator.num_processes
                progress["losses"].append(round(float(counts[0]), 6))
                progress["tokens"] += int(counts[1])
                progress["target_tokens"] += int(counts[2])
                progress["epoch"], progress["step"] = (epoch, step + 1) if step + 1 < len(batches) else (epoch + 1, 0)
                progress["seconds"] += time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(loss=f"{progress['losses'][-1]:.3f}")
                if update and progress["optimizer_step"] % config.log_every == 0:
                    recent = progress["losses"][-config.log_every * config.gradient_accumulation_steps :]
                    log.info(
                        "train loss",
                        stage=stage_name,
                        epoch=epoch,
                        step=step + 1,
                        optimizer_step=progress["optimizer_step"],
                        loss=round(sum(recent) / len(recent), 4),
                    )
                finished = epoch + 1 == config.epochs and step + 1 == len(batches)
                if update and not finished and progress["optimizer_step"] % config.checkpoint_every == 0:
                    _save_checkpoint(run, stage_name, model, optimizer, scheduler, progress)
                if run.on_step is not None:
                    run.on_step(
                        TrainStep(
                            stage_name,
                            epoch,
                            step,
                            len(progress["losses"]),
                            progress["optimizer_step"],
                            progress["losses"][-1],
                        )
                    )
    trained = accelerator.unwrap_model(model)
    adapter = run.output / ADAPTERS_DIR / stage_name
    if run.main:
        write_folder_atomically(adapter, lambda tmp: save_adapter(trained, tmp))
        shutil.rmtree(run.output / CHECKPOINTS_DIR / stage_name, ignore_errors=True)
    accelerator.wait_for_everyone()
    # Back to the plain base for the next stage; its weights were never changed.
    backend.model = trained.unload()
    backend.model.eval()
    accelerator.free_memory()
    result = StageTraining(
        stage=stage_name,
        adapter=adapter,
        examples=len(examples),
        epochs=config.epochs,
        steps=steps_per_epoch * config.epochs,
        losses=progress["losses"],
        tokens=progress["tokens"],
        target_tokens=progress["target_tokens"],
        seconds=round(progress["seconds"], 3),
        resumed_from_step=resumed_from,
    )
    log.info(
        "stage trained",
        stage=stage_name,
        first_loss=result.first_loss,
        final_loss=result.final_loss,
        tokens_per_second=round(result.tokens_per_second, 1),
        adapter=str(adapter),
    )
    return result


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

    :param distilled: a folder written by :func:`fslm_core.distillation.distill` (or its loaded data).
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
    plain = _without_adapters(stack)
    distilled_stages = set(data.stage_names)
    to_train = list(config.stages) if config.stages else [stage.name for stage in stack.stages]
    for name in to_train:
        if name not in {stage.name for stage in stack.stages}:
            raise InputError(f"stages: {name!r} is not a stage of stack {stack.name!r}")
        needed = [name, *stack.stage(name).reads]
        missing = [item for item in needed if item not in distilled_stages]
        if missing:
            raise InputError(
                f"stage {name!r}: the distilled data in {data.folder} has no targets for {missing}; "
                f"it holds {sorted(distilled_stages)} (decomposition {data.decomposition!r})"
            )
    folder = Path(output).expanduser().resolve()
    identity = {"stack": _stack_identity(plain), "config": config.identity(), "data": data.fingerprint}
    state = _check_output(folder, identity)

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
    run = _Run(config, folder, bound, progress, on_step)
    done = {name for name in to_train if _adapter_done(folder / ADAPTERS_DIR / name)}
    run.accelerator.wait_for_everyone()  # every process has seen which stages are done before any writes
    state = state or {"fslm_train": TRAIN_FORMAT, "identity": identity, "stages": {}}
    if run.main:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / STATE_NAME, state)

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
        pairs = stage_pairs(bound, name, train_examples)
        if not pairs:
            raise InputError(f"stage {name!r}: no training example has a non-empty target in {data.folder}")
        backend = bound.stages[name].backend
        max_length = _max_length(config.max_length, backend)
        encoded = [encode_example(backend, prompt, target, max_length) for prompt, target in pairs]
        results[name] = _train_stage(run, index, name, encoded)
        state["stages"][name] = results[name].model_dump(mode="json", exclude={"already_trained"})
        if run.main:
            atomic_write_json(folder / STATE_NAME, state)

    adapters = {name: folder / ADAPTERS_DIR / name for name in to_train if _adapter_done(folder / ADAPTERS_DIR / name)}
    trained = _with_adapters(stack, adapters)
    evaluation: dict[str, dict[str, float]] = {}
    if run.main:
        stack_file = trained.save(folder)
        if held_out and config.evaluators:
            from .stage_evaluation import evaluate_stages

            evaluation = evaluate_stages(
                trained,
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
            atomic_write_json(folder / STATE_NAME, state)
    else:
        stack_file = folder / STACK_FILE_NAME
    run.accelerator.wait_for_everyone()
    return TrainResult(
        output=folder, stack_file=stack_file, stages=results, held_out_examples=len(held_out), evaluation=evaluation
    )


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


def load_train_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> TrainConfig:
    """Training settings from a YAML/JSON file (optional) with ``overrides`` on top; None values are ignored.

    Comma-separated strings are accepted for ``stages``, ``target_modules`` and ``evaluators``.
    """
    import yaml

    values: dict = {}
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise InputError(f"--config: file not found: {file}")
        try:
            values = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            raise InputError(f"--config: {file} is not valid YAML or JSON") from None
        if not isinstance(values, dict):
            raise InputError(f"--config: {file} must hold a mapping of setting names to values")
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    for key in ("stages", "target_modules", "evaluators"):
        if isinstance(values.get(key), str):
            values[key] = tuple(item.strip() for item in values[key].split(",") if item.strip())
    return validate_settings(TrainConfig, values, "training settings")


def is_main_process() -> bool:
    """False in the extra processes of ``accelerate launch`` / torchrun (they print nothing)."""
    return int(os.environ.get("RANK", "0")) == 0
