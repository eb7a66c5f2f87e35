"""Training that starts from adapters trained before (``start_from``): a further epoch, or more data, on top.

A stage's LoRA starts as the adapter of the same stage in a trained stack's
folder (as ``fslm train`` writes it, or a plugin's shipped copy) instead of
peft's fresh one, whose second matrix is zero. The optimizer and the learning
rate schedule start afresh. The adapters count in the run's identity by their
content, so a resumed run must start from the same weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import InputError
from .output import ADAPTERS_DIR, adapter_done

WEIGHTS_FILE = "adapter_model.safetensors"
SHAPE_SETTINGS = {"r": "rank", "lora_alpha": "alpha", "target_modules": "target_modules"}
"""adapter_config.json's keys that must agree with this run's settings (CLI names on the right)."""


def start_adapters(folder: Path, stages: list[str]) -> dict[str, Path]:
    """Each trained stage's adapter folder in ``folder``; an error naming ``start_from`` for one it lacks."""
    adapters = {}
    for stage in stages:
        adapter = folder / ADAPTERS_DIR / stage
        if not adapter_done(adapter) or not (adapter / WEIGHTS_FILE).is_file():
            raise InputError(
                f"start_from: {folder} holds no trained adapter for stage {stage!r} "
                f"(expected {ADAPTERS_DIR}/{stage}/adapter_config.json and {WEIGHTS_FILE})"
            )
        adapters[stage] = adapter
    return adapters


def adapter_fingerprints(adapters: dict[str, Path]) -> dict[str, str]:
    """The sha256 of each adapter's weights file, by stage."""
    return {stage: hashlib.sha256((path / WEIGHTS_FILE).read_bytes()).hexdigest() for stage, path in adapters.items()}


def load_start_adapter(peft_model, adapter: Path, stage: str) -> None:
    """Copy ``adapter``'s weights into ``peft_model``'s fresh LoRA; an error if their shapes or settings differ."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        saved = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        weights = load_file(str(adapter / WEIGHTS_FILE))
    except Exception as error:  # json, the file system and safetensors each raise their own kind
        raise InputError(
            f"start_from: stage {stage!r}'s adapter in {adapter} cannot be read ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(saved, dict):
        raise InputError(f"start_from: {adapter / 'adapter_config.json'} does not hold an adapter's settings")
    wanted = peft_model.peft_config["default"]
    for key, setting in SHAPE_SETTINGS.items():
        theirs, ours = saved.get(key), getattr(wanted, key)
        if key == "target_modules":
            theirs, ours = sorted(theirs or []), sorted(ours or [])
        if theirs != ours:
            raise InputError(
                f"start_from: stage {stage!r}'s adapter in {adapter} has {setting} {theirs}, this run trains "
                f"{ours}; set {setting} to match it"
            )
    try:
        result = set_peft_model_state_dict(peft_model, weights)
    except RuntimeError as error:  # a size mismatch: the adapter was trained on another base model
        raise InputError(
            f"start_from: stage {stage!r}'s adapter in {adapter} does not fit this stage's model "
            f"({str(error).splitlines()[-1].strip()})"
        ) from None
    missing = [key for key in result.missing_keys if "lora_" in key]
    if result.unexpected_keys or missing:
        raise InputError(
            f"start_from: stage {stage!r}'s adapter in {adapter} does not match this stage's LoRA layers "
            f"({len(missing)} missing, {len(result.unexpected_keys)} unknown)"
        )
