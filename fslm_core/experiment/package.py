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
from ..files import write_folder_atomically

STACK_DATA = "stack"
BASELINE_DATA = "baseline"
TARGETS_FILE = "data/distilled.jsonl.gz"


def _half_precision_adapter(source: Path, target: Path) -> None:
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True)
    for file in source.iterdir():
        if file.name == "adapter_model.safetensors":
            tensors = {name: tensor.half() for name, tensor in load_file(str(file)).items()}
            save_file(tensors, str(target / file.name), metadata={"format": "pt"})
        elif file.is_file():
            shutil.copy2(file, target / file.name)


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
    adapters = {stage.name: stage.adapter for stage in stack.stages if stage.adapter is not None}

    def write(folder: Path) -> None:
        folder = folder.resolve()  # saved adapter paths are made relative to the folder by prefix
        folder.mkdir(parents=True)
        for stage, adapter in adapters.items():
            _half_precision_adapter(Path(adapter), folder / "adapters" / stage)
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
    tmp = targets.with_name(f".{targets.name}.tmp")
    # mtime=0: the same targets give the same bytes, so a rerun leaves the package unchanged.
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        for row in rows:
            handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    tmp.replace(targets)
    return len(rows)
