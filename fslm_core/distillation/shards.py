"""The layout of a distillation folder: its manifest and its shards.

``manifest.json`` holds the settings, the data fingerprint and the counts;
each ``shard-NNNNN/`` is a ``datasets`` folder (``Dataset.save_to_disk``) of
one row per (example, stage), written whole or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from ..files import VersionedJson, write_folder_atomically

MANIFEST = VersionedJson(
    "manifest.json",
    "fslm_distill",
    1,
    "a manifest of fslm distill",
    remedy="remove the folder or choose another output",
)


SHARD_PREFIX = "shard-"


REFERENCE = "reference"  # target_source of targets copied from the example's output


TEACHER = "teacher"


def distilled_features():
    """The columns of distilled data: one row per (example, stage)."""
    from datasets import Features, Value

    return Features(
        {
            "example_id": Value("int64"),
            "prompt": Value("string"),
            "stage": Value("string"),
            "stage_index": Value("int32"),
            "stage_input": Value("string"),
            "target": Value("string"),
            "target_source": Value("string"),
            "teacher": Value("string"),
            # The teacher's whole reply (answer-aware notes: one reply holds several stages' targets).
            "teacher_reply": Value("string"),
            # The teacher stopped at its token limit, so the target may be cut off.
            "hit_token_limit": Value("bool"),
        }
    )


def shard_folders(folder: Path) -> list[Path]:
    """Finished shards of a distillation folder, in order."""
    return sorted(path for path in folder.glob(f"{SHARD_PREFIX}*") if path.is_dir())


def write_shard(folder: Path, index: int, rows: list[dict]) -> Path:
    import datasets

    # A progress bar per shard would bury the distillation's own bar.
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        # A shard appears whole or not at all.
        return write_folder_atomically(
            folder / f"{SHARD_PREFIX}{index:05d}",
            lambda tmp: datasets.Dataset.from_list(rows, features=distilled_features()).save_to_disk(str(tmp)),
        )
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def done_example_ids(shards: Sequence[Path]) -> set[int]:
    from datasets import load_from_disk

    done: set[int] = set()
    for shard in shards:
        try:
            done.update(load_from_disk(str(shard))["example_id"])
        except (FileNotFoundError, ValueError, OSError) as error:
            raise InputError(f"shard {shard} cannot be read ({type(error).__name__}); delete it and rerun") from None
    return done


def count_empty_targets(shards: Sequence[Path]) -> int:
    from datasets import load_from_disk

    return sum(sum(1 for target in load_from_disk(str(shard))["target"] if not target.strip()) for shard in shards)
