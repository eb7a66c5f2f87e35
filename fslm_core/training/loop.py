"""The training loop of one stage: a LoRA adapter on the stage's base model, driven by accelerate.

A plain torch loop, so the same code runs on one CPU, one GPU, or several
processes under ``accelerate launch`` (data parallel; each process takes every
n-th batch). It does what a generic trainer cannot do for this task: batches
of similar length (little padding), and logits computed only at target
positions (the vocabulary projection of prompt tokens is skipped), which makes
it faster than HF Trainer on the same data (``benchmarks/train_throughput.py``).
"""

from __future__ import annotations

import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

from ..api.backends import ModelBackend
from ..errors import AdapterError
from ..files import write_folder_atomically
from ..logs import get_logger
from ..progress import progress_bar
from ..runtime import BoundStack
from ..runtime.devices import default_device
from ..runtime.scoring import EncodedExample, collate, micro_batches, slices_logits, target_loss
from .checkpoints import load_checkpoint, save_adapter, save_checkpoint
from .config import TrainConfig
from .examples import epoch_batches, process_share
from .output import ADAPTERS_DIR, CHECKPOINTS_DIR
from .results import StageTraining, TrainStep
from .start_from import load_start_adapter

log = get_logger(__name__)


class TrainingRun:
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


def lora_config(config: TrainConfig, backend: ModelBackend):
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


def autocast(run: TrainingRun, backend: ModelBackend):
    """bf16 autocast for a bf16 base on the CPU, else accelerate's own (mixed precision on GPUs, or none).

    peft keeps a bf16 base's LoRA weights in float32, so their updates and the
    optimizer's state keep float32 precision; under autocast the adapters'
    products run in bf16 like the base's, instead of casting every adapted
    layer's input up to float32 and its output back.
    """
    if backend.spec.dtype == "bfloat16" and backend.device.type == "cpu":
        import torch

        return torch.autocast("cpu", dtype=torch.bfloat16)
    return run.accelerator.autocast()


def train_stage(
    run: TrainingRun, stage_index: int, stage_name: str, examples: list[EncodedExample], start: Path | None = None
) -> StageTraining:
    """Train one stage's LoRA on ``examples`` (from the adapter in ``start``, if given), resuming its checkpoint."""
    import torch
    from peft import get_peft_model
    from transformers import get_linear_schedule_with_warmup, set_seed

    from ..runtime.cpu_tuning import tuning_enabled
    from ..runtime.int8_linear import int8_weights_read_in_a_row
    from ..runtime.packed_linear import pack_linear_layers, unpack_linear_layers

    config, accelerator = run.config, run.accelerator
    backend = run.bound.stages[stage_name].backend
    # Seeded per stage, so a stage trains the same whether or not earlier stages ran in this process.
    set_seed(config.seed + stage_index)
    # The packed inference copies of the base weights are never used while gradients are recorded.
    unpack_linear_layers(backend.model)
    try:
        with int8_weights_read_in_a_row():
            peft_model = get_peft_model(backend.model, lora_config(config, backend))
    except ValueError as error:
        raise AdapterError(
            f"stage {stage_name!r}: LoRA does not fit model {backend.spec.id!r} ({str(error).splitlines()[0]}); "
            "set target_modules (CLI: --target-modules) to module names of this model"
        ) from None
    if start is not None:  # before the checkpoint, which replaces these weights when a run resumes
        load_start_adapter(peft_model, start, stage_name)
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
    checkpoints = run.output / CHECKPOINTS_DIR / stage_name
    resumed = load_checkpoint(accelerator, checkpoints, stage_name, peft_model, optimizer, scheduler)
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
    bar = progress_bar(
        total=steps_per_epoch * config.epochs,
        initial=progress["epoch"] * steps_per_epoch + progress["step"],
        desc=f"train {stage_name}",
        unit="batch",
        show=run.progress and run.main,
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
                rows = [examples[i] for i in batches[step]]
                # The batch's loss is the mean over all its target tokens, whichever micro-batch holds them.
                count = sum(len(example) - max(example.target_start, 1) for example in rows)
                batch_loss = 0.0
                update = (step + 1) % config.gradient_accumulation_steps == 0 or step + 1 == len(batches)
                with nullcontext() if update else accelerator.no_sync(model):
                    for part in micro_batches(rows, config.max_batch_tokens):
                        with autocast(run, backend):
                            part_sum, _ = target_loss(model, collate(part, pad_id, device), slice_logits)
                        accelerator.backward(part_sum / max(count, 1) / config.gradient_accumulation_steps)
                        batch_loss += float(part_sum.detach())
                loss = batch_loss / max(count, 1)
                if update:
                    if config.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    progress["optimizer_step"] += 1
                counts = torch.tensor([loss, sum(len(example) for example in rows), count], device=device)
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
                    save_checkpoint(accelerator, checkpoints, model, optimizer, scheduler, progress)
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
        shutil.rmtree(checkpoints, ignore_errors=True)
    accelerator.wait_for_everyone()
    # Back to the plain base for the next stage; its weights were never changed.
    backend.model = trained.unload()
    backend.model.eval()
    if tuning_enabled() and backend.device.type == "cpu":
        pack_linear_layers(backend.model)
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
