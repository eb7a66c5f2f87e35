"""Distilled data from targets already written: a data set's own solutions, or programs checked elsewhere.

:func:`write_given_targets` lays out the same folder ``fslm distill`` writes
(a manifest and shards), so ``fslm train`` reads it like teacher targets.
Each row is a prompt and its target per stage; the stages' inputs are filled
in by training, from the stack it trains.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import InputError
from ..files import write_folder_atomically
from .shards import MANIFEST, REFERENCE, write_shard

SHARD_ROWS = 2000


def write_given_targets(
    output: str | os.PathLike,
    examples: Iterable[Mapping],
    name: str,
    source: str,
    target_source: str = REFERENCE,
) -> Path:
    """Write ``examples`` (each ``{"prompt": ..., "targets": {stage: text}}``) as distilled data in ``output``.

    ``name`` takes the place of the decomposition's name in the manifest and
    ``source`` says where the targets came from. The folder is written whole
    (a temporary folder renamed into place), replacing what was there.
    """
    rows, stages = [], {}
    for example_id, example in enumerate(examples):
        prompt, targets = example.get("prompt"), example.get("targets")
        if not isinstance(prompt, str) or not prompt.strip() or not isinstance(targets, Mapping) or not targets:
            raise InputError(f"example {example_id}: needs a prompt and a mapping of stage targets")
        for stage, target in targets.items():
            index = stages.setdefault(stage, len(stages))
            rows.append(
                {
                    "example_id": example_id,
                    "prompt": prompt,
                    "stage": stage,
                    "stage_index": index,
                    "stage_input": "",
                    "target": target,
                    "target_source": target_source,
                    "teacher": "",
                    "teacher_reply": "",
                    "hit_token_limit": False,
                }
            )
    if not rows:
        raise InputError("no examples to write")
    folder = Path(output).expanduser().resolve()
    identity = {"decomposition": name, "stages": [{"name": stage} for stage in stages], "source": source}
    manifest = {
        "identity": identity,
        "data_path": source,
        "examples": len({row["example_id"] for row in rows}),
        "shards": -(-len(rows) // SHARD_ROWS),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": 0.0,
    }

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        for shard, start in enumerate(range(0, len(rows), SHARD_ROWS)):
            write_shard(tmp, shard, rows[start : start + SHARD_ROWS])
        MANIFEST.write(tmp, manifest)

    return write_folder_atomically(folder, write)
