"""Teacher distillation: write every stage's training target for instruction data.

For each example of an Alpaca-style data set (``instruction``, ``input``,
``output``) and each stage of a decomposition, in stage order, a teacher model
writes the stage's target message. A stage's teacher prompt is its recipe's
``teacher_instruction`` applied to the stage input exactly as the engine would
build it (:func:`fslm_core.engine.stage_input`), with the earlier stages'
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

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from .api.decompositions import Decomposition, StageRecipe
from .api.formats import MessageFormat
from .declarations import GenerationSettings
from .errors import InputError
from .files import (
    atomic_write_json,
    existing_run_state,
    read_versioned_json,
    remove_temporaries,
    write_folder_atomically,
)
from .logs import get_logger
from .messages import Message, Trace
from .plugins import DEFAULT_DECOMPOSITION, DEFAULT_MODEL, Registry, get_registry
from .runtime.engine import bind_stack, stage_input
from .runtime.pool import ModelPool
from .validation import with_overrides

DISTILL_FORMAT = 1
MANIFEST_NAME = "manifest.json"
SHARD_PREFIX = "shard-"
REFERENCE = "reference"  # target_source of targets copied from the example's output
TEACHER = "teacher"

log = get_logger(__name__)


# Instruction data ------------------------------------------------------------


def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """The user prompt a stack sees for an Alpaca example: the instruction, then its input if any."""
    instruction, input_text = instruction.strip(), input_text.strip()
    return f"{instruction}\n\n{input_text}" if input_text else instruction


class InstructionExample(BaseModel):
    """One usable row of instruction data; ``example_id`` is its position in the file."""

    model_config = ConfigDict(frozen=True)

    example_id: int
    instruction: str
    input: str = ""
    output: str

    @property
    def prompt(self) -> str:
        return alpaca_prompt(self.instruction, self.input)


@dataclass
class InstructionData:
    """The usable rows of a data file and why the others were skipped."""

    path: Path
    sha256: str
    rows: int
    examples: list[InstructionExample]
    skipped: Counter

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def _row_problem(row: Any) -> str | None:
    """Why a row cannot be used, or None. ``input`` may be absent (many Alpaca-style sets drop it)."""
    if not isinstance(row, dict):
        return "row is not an object"
    for name in ("instruction", "output"):
        if name not in row or row[name] is None:
            return f"missing {name}"
        if not isinstance(row[name], str):
            return f"{name} is not text"
        if not row[name].strip():
            return f"empty {name}"
    if row.get("input") is not None and not isinstance(row["input"], str):
        return "input is not text"
    return None


def read_instruction_data(path: str | os.PathLike) -> InstructionData:
    """Read an Alpaca-format file: a JSON array of rows, or JSON lines (``.jsonl``).

    Rows that lack a field or hold the wrong type are counted by reason and left
    out; a file that cannot be read at all raises :class:`InputError`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"data: file not found: {path}")
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    skipped: Counter = Counter()
    if path.suffix == ".jsonl":
        rows: list[Any] = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                rows.append(None)
                skipped["line is not JSON"] += 1
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(
                f"data: {path} is not valid JSON (line {error.lineno}); expected an array of "
                "{instruction, input, output} objects or a .jsonl file"
            ) from None
        if not isinstance(rows, list):
            raise InputError(f"data: {path} holds a JSON {type(rows).__name__}, expected an array of rows")
    examples = []
    for index, row in enumerate(rows):
        if row is None and path.suffix == ".jsonl":
            continue  # already counted as not JSON
        problem = _row_problem(row)
        if problem:
            skipped[problem] += 1
            continue
        examples.append(
            InstructionExample(
                example_id=index, instruction=row["instruction"], input=row.get("input") or "", output=row["output"]
            )
        )
    return InstructionData(path.resolve(), hashlib.sha256(raw).hexdigest(), len(rows), examples, skipped)


# Settings and results --------------------------------------------------------


class DistillConfig(BaseModel):
    """How targets are distilled. Fields that change the targets must match when a run resumes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    decomposition: str = Field(
        default=DEFAULT_DECOMPOSITION, description="Registered decomposition whose stages get targets."
    )
    teacher: str = Field(
        default=DEFAULT_MODEL, description="Model id that writes the targets (any registered id or hf:<path>)."
    )
    teacher_model_path: Path | None = Field(default=None, description="Local folder with the teacher's weights.")
    max_new_tokens: int | None = Field(
        default=None, gt=0, description="Cap on tokens per teacher target; None uses each stage's own limit."
    )
    seed: int = Field(default=0, description="Seeds sampling teachers (greedy decoding does not depend on it).")
    batch_size: int = Field(default=16, gt=0, description="Teacher prompts per generate call.")
    shard_size: int = Field(default=64, gt=0, description="Examples per written shard: the most an interruption loses.")
    limit: int | None = Field(default=None, gt=0, description="Distil only the first N usable examples.")


class DistillSummary(BaseModel):
    """What a distillation run did; ``skipped`` counts unusable rows by reason."""

    output: Path
    rows_read: int
    usable_examples: int
    skipped: dict[str, int]
    examples_before: int = Field(description="Examples the folder held when the run started.")
    examples_distilled: int = Field(description="Examples this run added.")
    examples_total: int = Field(description="Examples the folder holds now.")
    empty_targets: int = Field(description="Teacher targets that came out empty (kept; training leaves them out).")
    shards: int
    seconds: float

    def render(self) -> str:
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items())) or "none"
        return (
            f"distilled {self.examples_distilled} examples this run ({self.examples_total} in {self.output}, "
            f"{self.shards} shards) in {self.seconds:.1f}s; rows read {self.rows_read}, usable {self.usable_examples}, "
            f"skipped {sum(self.skipped.values())} ({skipped}); empty teacher targets {self.empty_targets}"
        )


@dataclass(frozen=True)
class ShardWritten:
    """Passed to ``on_shard`` after each shard is safely on disk."""

    path: Path
    index: int
    examples: int
    examples_total: int


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
    return {
        "decomposition": decomposition.name,
        "stages": [_recipe_identity(recipe) for recipe in decomposition.stages],
        "teacher": config.teacher,
        "teacher_model_path": str(config.teacher_model_path) if config.teacher_model_path else None,
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
        "data_sha256": data.sha256,
    }


# Output folder -----------------------------------------------------------------


def _read_manifest(folder: Path) -> dict | None:
    return read_versioned_json(
        folder / MANIFEST_NAME,
        "fslm_distill",
        DISTILL_FORMAT,
        "a manifest of fslm distill",
        remedy="remove the folder or choose another output",
    )


def shard_folders(folder: Path) -> list[Path]:
    """Finished shards of a distillation folder, in order."""
    return sorted(path for path in folder.glob(f"{SHARD_PREFIX}*") if path.is_dir())


def _check_output(folder: Path, identity: dict) -> dict | None:
    """The existing manifest if ``folder`` continues the same distillation; an error if it holds other data."""
    manifest = existing_run_state(folder, MANIFEST_NAME, _read_manifest)
    if manifest is None:
        return None
    previous = manifest.get("identity", {})
    for key, value in identity.items():
        if previous.get(key) != value:
            what = "the data file's content" if key == "data_sha256" else f"{key!r}"
            raise InputError(
                f"output: {folder} holds a distillation with a different {what} "
                f"({previous.get(key)!r} there, {value!r} now); choose another output folder"
            )
    return manifest


def _done_example_ids(shards: Sequence[Path]) -> set[int]:
    from datasets import load_from_disk

    done: set[int] = set()
    for shard in shards:
        try:
            done.update(load_from_disk(str(shard))["example_id"])
        except (FileNotFoundError, ValueError, OSError) as error:
            raise InputError(f"shard {shard} cannot be read ({type(error).__name__}); delete it and rerun") from None
    return done


def _write_shard(folder: Path, index: int, rows: list[dict]) -> Path:
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
        }
    )


# Distillation -------------------------------------------------------------------


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


def teacher_instruction(recipe: StageRecipe, message_format: MessageFormat) -> str:
    """The teacher's instruction for a stage, plus what the stage's format asks of the layout."""
    if message_format.instructions:
        return f"{recipe.teacher_instruction} {message_format.instructions}"
    return recipe.teacher_instruction or ""


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
    manifest = _check_output(folder, identity)
    folder.mkdir(parents=True, exist_ok=True)
    remove_temporaries(folder)  # a shard an interruption left half-written

    shards = shard_folders(folder)
    done = _done_example_ids(shards)
    wanted = instruction_data.examples[: config.limit] if config.limit else instruction_data.examples
    todo = [example for example in wanted if example.example_id not in done]
    manifest = {
        "fslm_distill": DISTILL_FORMAT,
        "identity": identity,
        "data_path": str(instruction_data.path),
        "rows_read": instruction_data.rows,
        "usable_examples": len(instruction_data.examples),
        "skipped": dict(instruction_data.skipped),
        "created": (manifest or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        "examples": len(done),
        "shards": len(shards),
    }
    atomic_write_json(folder / MANIFEST_NAME, manifest)
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
        teacher = _Teacher(config, decomposition, registry, pool)
        bar = tqdm(total=len(todo) * teacher.generating_stages, desc="distill", unit="target", disable=not progress)
        with bar:
            for start in range(0, len(todo), config.shard_size):
                chunk = todo[start : start + config.shard_size]
                rows = teacher.targets(chunk, on_batch=bar.update)
                path = _write_shard(folder, next_index, rows)
                distilled_now += len(chunk)
                manifest.update(examples=len(done) + distilled_now, shards=len(shard_folders(folder)))
                atomic_write_json(folder / MANIFEST_NAME, manifest)
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
        empty_targets=_count_empty_targets(final_shards),
        shards=len(final_shards),
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info("distillation finished", **summary.model_dump(mode="json", exclude={"skipped"}))
    return summary


def _count_empty_targets(shards: Sequence[Path]) -> int:
    from datasets import load_from_disk

    return sum(sum(1 for target in load_from_disk(str(shard))["target"] if not target.strip()) for shard in shards)


class _Teacher:
    """The teacher model bound to a decomposition's stages."""

    def __init__(self, config: DistillConfig, decomposition: Decomposition, registry: Registry, pool: ModelPool):
        self.config = config
        self.recipes = decomposition.stages
        self.stack = decomposition.build(config.teacher, model_path=config.teacher_model_path, name=decomposition.name)
        self.bound = bind_stack(self.stack, registry, pool)
        self.formats = self.bound.formats
        self.generating_stages = sum(1 for recipe in self.recipes if recipe.teacher_instruction)
        if config.seed is not None:
            from transformers import set_seed

            set_seed(config.seed)

    def settings(self, recipe: StageRecipe, stage_settings: GenerationSettings) -> GenerationSettings:
        if self.config.max_new_tokens is None:
            return stage_settings
        limit = min(stage_settings.max_new_tokens, self.config.max_new_tokens)
        return stage_settings.model_copy(update={"max_new_tokens": limit})

    def targets(self, examples: Sequence[InstructionExample], on_batch: Callable[[int], None]) -> list[dict]:
        """Rows (example, stage) with the stage's input and target, all stages in order."""
        targets: list[dict[str, str]] = [{} for _ in examples]
        rows: list[dict] = []
        for stage_index, (recipe, stage) in enumerate(zip(self.recipes, self.stack.stages, strict=True)):
            traces = [
                targets_trace(self.stack.name, example.prompt, done, self.formats, self.config.teacher)
                for example, done in zip(examples, targets)
            ]
            inputs = [stage_input(stage, trace, self.formats) for trace in traces]
            if recipe.teacher_instruction is None:
                texts, source = [example.output.strip() for example in examples], REFERENCE
            else:
                item = self.bound.stages[stage.name]
                instruction = teacher_instruction(recipe, item.format)
                generations = item.backend.generate(
                    [item.backend.render_prompt(instruction, text) for text in inputs],
                    [None] * len(inputs),
                    self.settings(recipe, stage.generation),
                    self.config.batch_size,
                    on_batch=on_batch,
                )
                texts, source = [generation.text.strip() for generation in generations], TEACHER
            for example, done, text, stage_text in zip(examples, targets, texts, inputs):
                done[stage.name] = text
                rows.append(
                    {
                        "example_id": example.example_id,
                        "prompt": example.prompt,
                        "stage": stage.name,
                        "stage_index": stage_index,
                        "stage_input": stage_text,
                        "target": text,
                        "target_source": source,
                        "teacher": self.config.teacher if source == TEACHER else REFERENCE,
                    }
                )
        return rows


# Reading distilled data ---------------------------------------------------------


@dataclass(frozen=True)
class DistilledExample:
    """One example's targets (and the stage inputs they were written for), by stage name."""

    example_id: int
    prompt: str
    targets: dict[str, str]
    stage_inputs: dict[str, str]


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
        return list(grouped.values())

    def __len__(self) -> int:
        return len(set(self.dataset["example_id"]))


def load_distilled(folder: str | os.PathLike) -> DistilledData:
    """Open a folder written by :func:`distill`."""
    from datasets import concatenate_datasets, load_from_disk

    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"distilled data: folder not found: {folder}; create it with `fslm distill`")
    manifest = _read_manifest(folder)
    if manifest is None:
        raise InputError(f"distilled data: {folder} has no {MANIFEST_NAME}; it was not written by `fslm distill`")
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
