"""The output folder of a training run and the state that lets a rerun resume it.

::

    stack.yaml                the trained stack; stages point to their adapters
    adapters/<stage>/         standard PEFT folders (PeftModel.from_pretrained)
    training.json             settings, per-stage losses and the evaluation
    checkpoints/<stage>/      the stage in progress (removed when it finishes)
"""

from __future__ import annotations

from pathlib import Path

from ..declarations import STACK_FILE_NAME, Stack, load_stack
from ..errors import FslmError, InputError
from ..files import VersionedJson, existing_run_state

STATE = VersionedJson(
    "training.json",
    "fslm_train",
    1,
    "a training state of fslm",
    remedy="remove it or choose another folder",
    field="output: ",
)


ADAPTERS_DIR = "adapters"


CHECKPOINTS_DIR = "checkpoints"


def stack_identity(stack: Stack) -> dict:
    # The dtype counts as what it resolves to, in the training settings' identity (train_stack).
    data = stack.model_dump(mode="json", exclude={"description", "dtype"})
    for stage in data["stages"]:
        stage.pop("adapter", None)
    return data


def check_output(folder: Path, identity: dict) -> dict | None:
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
        if stack_identity(existing) != identity["stack"]:
            raise InputError(
                f"output: {folder} already holds a different stack ({existing.name!r}); "
                "choose another folder or remove it"
            )

    state = existing_run_state(folder, STATE, " for the trained stack", check_folder=check_stack)
    if state is None:
        return None
    previous = state.get("identity", {})
    for key, what in (("stack", "stack"), ("config", "training settings"), ("data", "distilled data")):
        if previous.get(key) != identity[key]:
            detail = ""
            if key == "config":
                before = previous.get(key, {})
                changed = sorted(
                    k for k in before.keys() | identity[key].keys() if before.get(k) != identity[key].get(k)
                )
                detail = f" (changed: {', '.join(changed)})"
            raise InputError(
                f"output: {folder} holds a training run with different {what}{detail}; "
                "rerun with the same settings to resume, or choose another folder"
            )
    return state


def adapter_done(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()
