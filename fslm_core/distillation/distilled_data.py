"""Reading distilled data: each example's target per stage, and the traces a stage's input is built from."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api.formats import MessageFormat
from ..errors import InputError
from ..messages import Message, Trace
from .shards import MANIFEST, shard_folders


@dataclass(frozen=True)
class DistilledExample:
    """One example's targets (and the stage inputs they were written for), by stage name."""

    example_id: int
    prompt: str
    targets: dict[str, str]
    stage_inputs: dict[str, str]
    hit_token_limit: dict[str, bool] = field(default_factory=dict)
    """Stages whose teacher stopped at its token limit (the target may be cut off)."""


@dataclass
class DistilledData:
    """A distillation folder: its manifest and all finished shards as one ``datasets.Dataset``."""

    folder: Path
    manifest: dict
    dataset: Any  # datasets.Dataset, one row per (example, stage)

    @property
    def decomposition(self) -> str:
        return self.manifest["identity"]["decomposition"]

    @property
    def stage_names(self) -> list[str]:
        return [stage["name"] for stage in self.manifest["identity"]["stages"]]

    @property
    def fingerprint(self) -> str:
        """Changes whenever the folder's content does (more examples, other targets)."""
        digest = hashlib.sha256(json.dumps(self.manifest["identity"], sort_keys=True).encode())
        for shard in shard_folders(self.folder):
            digest.update(shard.name.encode())
            for file in sorted(shard.glob("data-*.arrow")):
                digest.update(f"{file.name}:{file.stat().st_size}".encode())
        return digest.hexdigest()[:16]

    def examples(self) -> list[DistilledExample]:
        """Examples in file order, each with every stage's target."""
        grouped: dict[int, DistilledExample] = {}
        # Sorted in Python: Dataset.sort would write cache files into the shard folders.
        rows = sorted(self.dataset.to_list(), key=lambda row: (row["example_id"], row["stage_index"]))
        for row in rows:
            example = grouped.setdefault(row["example_id"], DistilledExample(row["example_id"], row["prompt"], {}, {}))
            example.targets[row["stage"]] = row["target"]
            example.stage_inputs[row["stage"]] = row["stage_input"]
            example.hit_token_limit[row["stage"]] = bool(row.get("hit_token_limit", False))
        return list(grouped.values())

    def __len__(self) -> int:
        return len(set(self.dataset["example_id"]))


def load_distilled(folder: str | os.PathLike) -> DistilledData:
    """Open a folder written by :func:`distill`."""
    from datasets import concatenate_datasets, load_from_disk

    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"distilled data: folder not found: {folder}; create it with `fslm distill`")
    manifest = MANIFEST.read(folder)
    if manifest is None:
        raise InputError(f"distilled data: {folder} has no {MANIFEST.name}; it was not written by `fslm distill`")
    shards = shard_folders(folder)
    if not shards:
        raise InputError(f"distilled data: {folder} holds no finished shard yet; run `fslm distill` to fill it")
    datasets = []
    for shard in shards:
        try:
            datasets.append(load_from_disk(str(shard)))
        except (FileNotFoundError, ValueError, OSError) as error:
            raise InputError(
                f"shard {shard} cannot be read ({type(error).__name__}); delete it and rerun distill"
            ) from None
    return DistilledData(folder, manifest, concatenate_datasets(datasets))


def targets_trace(
    stack_name: str, prompt: str, targets: Mapping[str, str], formats: Mapping[str, MessageFormat], model: str
) -> Trace:
    """A trace whose messages are the given targets, as if the stages had written them.

    Parsing each target with its stage's format makes the reading stages see the
    targets rendered exactly as the engine renders real messages.
    """
    trace = Trace(stack=stack_name, prompt=prompt)
    for stage_name, text in targets.items():
        trace.messages.append(
            Message(
                stage=stage_name,
                text=text,
                fields=formats[stage_name].parse(text),
                model=model,
                prompt_tokens=0,
                completion_tokens=0,
                latency_s=0.0,
                batch_size=1,
            )
        )
    return trace
