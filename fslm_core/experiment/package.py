"""Copy a trained stack into a plugin's package data: half-precision adapters, the stack file, its targets.

The copy is what a plugin ships (``fslm-plugin-smollm2-paper``): ``stack/``
with ``stack.yaml`` and one PEFT folder per stage whose weights are stored in
float16 (a few MB each; peft casts them to the base model's dtype on load),
and ``data/distilled.jsonl.gz``, the examples the stages were trained on, one
JSON object per example with every stage's target. The experiment writes
the same-data baseline beside it (``baseline/``), in the same form, with
:func:`write_half_precision_stack`.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

from ..declarations import load_stack
from ..distillation import load_distilled
from ..files import TMP_PREFIX, atomic_write_text, write_folder_atomically

STACK_DATA = "stack"
BASELINE_DATA = "baseline"
TARGETS_FILE = "data/distilled.jsonl.gz"


def _half_precision_adapter(source: Path, target: Path, stack: str, stage: str, model: str) -> None:
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True)
    for file in source.iterdir():
        if file.name == "adapter_model.safetensors":
            tensors = {name: tensor.half() for name, tensor in load_file(str(file)).items()}
            save_file(tensors, str(target / file.name), metadata={"format": "pt"})
        elif file.is_file() and file.name != "README.md":
            shutil.copy2(file, target / file.name)
    describe_shipped_adapter(target, stack, stage, model)


def describe_shipped_adapter(adapter: Path, stack: str, stage: str, model: str) -> None:
    """Make a shipped adapter folder say what it is: its config names the base model by fslm's model id
    (peft writes the local folder it trained from, a path on the training machine), and its README replaces
    peft's blank model-card template."""
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = model
    atomic_write_text(config_file, json.dumps(config, indent=2, sort_keys=True) + "\n")
    atomic_write_text(
        adapter / "README.md",
        f"# {stack}: the `{stage}` stage's LoRA adapter\n\n"
        f"A PEFT LoRA adapter (weights in float16) on fslm's model `{model}`, trained by `fslm train` for the "
        f"`{stage}` stage of the `{stack}` stack. fslm loads it through the stack file one folder up "
        "(`stack.yaml`); the package's model card says how it was trained and what it scores.\n",
    )


def package_stack(
    stack_folder: Path,
    distilled_folder: Path,
    package: Path,
    name: str,
    description: str,
) -> dict:
    """Write ``package/stack`` and ``package/data``; return what was written (sizes in bytes)."""
    write_half_precision_stack(stack_folder, package / STACK_DATA, name, description)
    examples = _write_targets(distilled_folder, package)
    sizes = {str(path.relative_to(package)): path.stat().st_size for path in package.rglob("*") if path.is_file()}
    return {"examples": examples, "bytes": sum(sizes.values()), "files": sizes}


def write_half_precision_stack(stack_folder: Path, target: Path, name: str, description: str) -> None:
    """Copy the stack in ``stack_folder`` to ``target`` (replaced atomically) with float16 adapters."""
    stack = load_stack(stack_folder)

    def write(folder: Path) -> None:
        folder = folder.resolve()  # saved adapter paths are made relative to the folder by prefix
        folder.mkdir(parents=True)
        for stage in stack.stages:
            if stage.adapter is not None:
                _half_precision_adapter(
                    Path(stage.adapter), folder / "adapters" / stage.name, name, stage.name, stage.model
                )
        renamed = stack.model_copy(
            update={
                "name": name,
                "description": description,
                "stages": tuple(
                    stage.model_copy(update={"adapter": folder / "adapters" / stage.name} if stage.adapter else {})
                    for stage in stack.stages
                ),
            }
        )
        renamed.save(folder)

    write_folder_atomically(target, write)


def _write_targets(distilled_folder: Path, package: Path) -> int:
    data = load_distilled(distilled_folder)
    rows = [
        {"example_id": example.example_id, "prompt": example.prompt, "targets": example.targets}
        for example in data.examples()
    ]
    targets = package / TARGETS_FILE
    targets.parent.mkdir(parents=True, exist_ok=True)
    tmp = targets.with_name(f"{TMP_PREFIX}{targets.name}")
    # mtime=0: the same targets give the same bytes, so a rerun leaves the package unchanged.
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        for row in rows:
            handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    tmp.replace(targets)
    return len(rows)
