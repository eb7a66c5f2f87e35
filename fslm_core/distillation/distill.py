"""Teacher distillation: write every stage's training target for instruction data.

For each example of an Alpaca-style data set (``instruction``, ``input``,
``output``) and each stage of a decomposition, in stage order, a teacher model
writes the stage's target message. A stage's teacher prompt is its recipe's
``teacher_instruction`` applied to the stage input exactly as the engine would
build it (:func:`fslm_core.runtime.stage_input`), with the earlier stages'
targets standing in for the messages those stages would have written. A stage
without a teacher instruction (the final one) takes the example's reference
output as its target.

The result is a folder::

    manifest.json        settings, data fingerprint and counts
    shard-00000/ ...     ``datasets`` folders (Dataset.save_to_disk), one per
                         batch of examples, one row per (example, stage)

Each shard is written to a temporary folder and renamed into place once all
its stages are done, so a run that is interrupted loses at most the shard in
progress, and rerunning the same command continues with the examples no shard
holds yet.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..api.decompositions import Decomposition, StageRecipe
from ..errors import InputError
from ..files import existing_run_state, remove_temporaries
from ..logs import get_logger
from ..plugins import Registry, get_registry
from ..progress import progress_bar
from ..runtime.pool import ModelPool
from ..validation import with_overrides
from .config import DistillConfig, DistillSummary, ShardWritten
from .instruction_data import InstructionData, read_instruction_data
from .shards import (
    MANIFEST,
    SHARD_PREFIX,
    count_empty_targets,
    done_example_ids,
    shard_folders,
    write_shard,
)
from .teacher import Teacher, teacher_notes

log = get_logger(__name__)


def _recipe_identity(recipe: StageRecipe) -> dict:
    return {
        "name": recipe.name,
        "teacher_instruction": recipe.teacher_instruction,
        "template": recipe.template,
        "reads": list(recipe.reads),
        "format": recipe.format,
        "max_new_tokens": recipe.max_new_tokens,
    }


def _identity(config: DistillConfig, decomposition: Decomposition, data: InstructionData) -> dict:
    """Everything that decides the targets; a resumed run must agree on all of it."""
    notes = teacher_notes(config, decomposition)
    return {
        "decomposition": decomposition.name,
        "stages": [_recipe_identity(recipe) for recipe in decomposition.stages],
        # Through JSON, so tuples compare equal to the lists a manifest reads back.
        "teacher_notes": json.loads(json.dumps(dataclasses.asdict(notes))) if notes is not None else None,
        "teacher": config.teacher,
        "teacher_model_path": str(config.teacher_model_path) if config.teacher_model_path else None,
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
        "data_sha256": data.sha256,
    }


def check_output(folder: Path, identity: dict) -> dict | None:
    """The existing manifest if ``folder`` continues the same distillation; an error if it holds other data."""
    manifest = existing_run_state(folder, MANIFEST)
    if manifest is None:
        return None
    previous = manifest.get("identity", {})
    for key, value in identity.items():
        if previous.get(key) != value:
            what = "the data file's content" if key == "data_sha256" else f"{key!r}"
            values = f" ({previous.get(key)!r} there, {value!r} now)"
            if len(values) > 120:  # stage recipes and teacher notes: the name says enough
                values = ""
            raise InputError(
                f"output: {folder} holds a distillation with a different {what}{values}; choose another output folder"
            )
    return manifest


def distill(
    data: str | os.PathLike,
    output: str | os.PathLike,
    config: DistillConfig | None = None,
    *,
    progress: bool = True,
    registry: Registry | None = None,
    pool: ModelPool | None = None,
    on_shard: Callable[[ShardWritten], None] | None = None,
    **settings: Any,
) -> DistillSummary:
    """Distil per-stage targets for the examples in ``data`` into the folder ``output``.

    ``settings`` override fields of ``config`` (``teacher="hf:/models/llama-3b"``,
    ``limit=100``...). Rerunning with the same settings resumes: examples already
    in a shard are not generated again. ``on_shard`` is called after each shard
    is on disk. Returns a summary with the counts of skipped rows.
    """
    started = time.perf_counter()
    config = with_overrides(DistillConfig, config, settings, "distillation settings")
    registry = registry or get_registry()
    pool = pool or ModelPool()
    decomposition = registry.decomposition(config.decomposition, field="decomposition")
    registry.model(config.teacher, field="teacher")  # an unknown teacher fails before any work
    instruction_data = read_instruction_data(data)
    if not instruction_data.examples:
        reasons = ", ".join(f"{n} {why}" for why, n in instruction_data.skipped.items()) or "the file holds no rows"
        raise InputError(f"data: {instruction_data.path} has no usable rows ({reasons})")
    folder = Path(output).expanduser().resolve()
    identity = _identity(config, decomposition, instruction_data)
    manifest = check_output(folder, identity)
    folder.mkdir(parents=True, exist_ok=True)
    remove_temporaries(folder)  # a shard an interruption left half-written

    shards = shard_folders(folder)
    done = done_example_ids(shards)
    wanted = instruction_data.examples[: config.limit] if config.limit else instruction_data.examples
    todo = [example for example in wanted if example.example_id not in done]
    manifest = {
        "identity": identity,
        "data_path": str(instruction_data.path),
        "rows_read": instruction_data.rows,
        "usable_examples": len(instruction_data.examples),
        "skipped": dict(instruction_data.skipped),
        "created": (manifest or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        "examples": len(done),
        "shards": len(shards),
        # Teacher time summed over the runs that wrote this folder (one run's own time is in its summary).
        "seconds": (manifest or {}).get("seconds", 0.0),
    }
    MANIFEST.write(folder, manifest)
    seconds_before = manifest["seconds"]
    log.info(
        "distillation planned",
        output=str(folder),
        usable=len(instruction_data.examples),
        skipped=instruction_data.skipped_total,
        already_done=len(done),
        todo=len(todo),
    )
    next_index = int(shards[-1].name.removeprefix(SHARD_PREFIX)) + 1 if shards else 0
    distilled_now = 0
    if todo:
        teacher = Teacher(config, decomposition, registry, pool)
        bar = progress_bar(total=len(todo) * teacher.generating_stages, desc="distill", unit="target", show=progress)
        with bar:
            for start in range(0, len(todo), config.shard_size):
                chunk = todo[start : start + config.shard_size]
                rows = teacher.targets(chunk, on_batch=bar.update)
                path = write_shard(folder, next_index, rows)
                distilled_now += len(chunk)
                manifest.update(
                    examples=len(done) + distilled_now,
                    shards=len(shard_folders(folder)),
                    seconds=round(seconds_before + time.perf_counter() - started, 1),
                )
                MANIFEST.write(folder, manifest)
                log.info("shard written", shard=path.name, examples=len(chunk), total=manifest["examples"])
                if on_shard is not None:
                    on_shard(ShardWritten(path, next_index, len(chunk), manifest["examples"]))
                next_index += 1
    final_shards = shard_folders(folder)
    summary = DistillSummary(
        output=folder,
        rows_read=instruction_data.rows,
        usable_examples=len(instruction_data.examples),
        skipped=dict(instruction_data.skipped),
        examples_before=len(done),
        examples_distilled=distilled_now,
        examples_total=len(done) + distilled_now,
        empty_targets=count_empty_targets(final_shards),
        shards=len(final_shards),
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info("distillation finished", **summary.model_dump(mode="json", exclude={"skipped"}))
    return summary
