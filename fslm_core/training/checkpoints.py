"""Checkpoints of the stage in progress: adapter weights, optimizer, scheduler, position and random state.

A checkpoint is written under a temporary name and renamed in whole, so a
resumed stage continues from the last complete one and ends exactly where an
uninterrupted run would.
"""

from __future__ import annotations

import random
import shutil
import warnings
from pathlib import Path

from ..files import replace_folder, temporary_folder, temporary_name
from ..logs import get_logger

log = get_logger(__name__)


def save_adapter(peft_model, folder: Path) -> None:
    """Save the LoRA weights and config as a standard PEFT folder."""
    with warnings.catch_warnings():
        # peft looks for the base's config.json to see whether the vocabulary changed (it never does
        # here); a base read from a GGUF file has none, and the warning would repeat for every save.
        warnings.filterwarnings("ignore", message="Could not find a config file")
        peft_model.save_pretrained(str(folder))


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


def save_checkpoint(accelerator, root: Path, model, optimizer, scheduler, progress: dict) -> None:
    """Adapter weights, optimizer, scheduler, position and each process's random state, renamed in whole.

    Every process calls it: each writes its own random state into the folder the main process prepares.
    """
    import torch

    main = accelerator.is_main_process
    final = root / f"step-{progress['optimizer_step']:08d}"
    tmp = temporary_folder(final) if main else temporary_name(final)
    if main:
        tmp.mkdir()
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if main:
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


def load_checkpoint(accelerator, root: Path, stage: str, peft_model, optimizer, scheduler) -> dict | None:
    """Restore the stage in progress from its latest checkpoint in ``root``; None if it has no usable one."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    checkpoint = _latest_checkpoint(root)
    if checkpoint is None:
        return None
    state = torch.load(checkpoint / "state.pt", weights_only=False)
    if state["num_processes"] != accelerator.num_processes:
        log.warning(
            "checkpoint was written with another number of processes; the stage restarts",
            stage=stage,
            checkpoint=str(checkpoint),
            then=state["num_processes"],
            now=accelerator.num_processes,
        )
        return None
    set_peft_model_state_dict(peft_model, load_file(str(checkpoint / "adapter" / "adapter_model.safetensors")))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_file = checkpoint / f"rng-{accelerator.process_index}.pt"
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
