"""What makes the stages learn their roles: small, comparable runs before the full one.

Two kinds, each on a slice of the data, each measured the same way:

* **teachers**: other teacher settings (say the embedded model, one call per
  stage) distil the first examples again; their targets are scored by the
  target filter (the share kept, and why the others were dropped) and their
  speed by examples per hour, next to the main teacher's on the same examples;
* **training variants**: the four stages are trained on the first examples
  with or without the target filter and with each way of feeding later stages
  (their targets, or what the trained earlier stages write); each variant's
  stack is scored on the same held-out examples by target loss (teacher
  forced) and by the role checks of what it writes end to end.

Results go to ``ablations.json``; each variant's folders stay in
``ablations/`` so an interrupted step resumes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ..declarations import load_stack
from ..distillation import DistillConfig, distill, filter_distilled, filter_examples, load_distilled
from ..distillation.shards import shard_folders
from ..errors import InputError
from ..files import atomic_write_json
from ..plugins import Registry
from ..training import TrainConfig, score_stages, train_stack
from ..validation import validate_settings
from .config import Ablations
from .stage_checks import check_stage_roles

ABLATIONS_DIR = "ablations"
ABLATIONS_FILE = "ablations.json"


def _shards(source: Path, examples: int, target: Path, skip: int = 0) -> int:
    """A distillation folder with whole shards of ``source`` (after its first ``skip`` examples) holding at least
    ``examples`` examples; kept if it exists."""
    from datasets import load_from_disk

    if target.is_dir():
        return sum(len(set(load_from_disk(str(shard))["example_id"])) for shard in shard_folders(target))
    tmp = target.with_name(f".tmp-{target.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy(source / "manifest.json", tmp / "manifest.json")
    seen = held = 0
    for shard in shard_folders(source):
        count = len(set(load_from_disk(str(shard))["example_id"]))
        seen += count
        if seen <= skip:
            continue
        if held >= examples:
            break
        shutil.copytree(shard, tmp / shard.name)
        held += count
    tmp.rename(target)
    return held


def _examples_per_hour(folder: Path) -> float | None:
    """The pace a distillation folder was written at, from its shards' times (the first shard's start is unknown)."""
    shards = shard_folders(folder)
    if len(shards) < 2:
        return None
    examples = len(load_distilled(folder)) * (len(shards) - 1) / len(shards)
    hours = (shards[-1].stat().st_mtime - shards[0].stat().st_mtime) / 3600
    return round(examples / hours, 1) if hours > 0 else None


def _filter_share(folder: Path, registry: Registry, first: int) -> dict:
    data = load_distilled(folder)
    examples = [example for example in data.examples()][:first]
    decomposition = registry.decomposition(data.decomposition, field="decomposition")
    report = filter_examples(examples, decomposition)
    return {"examples": len(examples), "kept_share": round(len(report.kept) / max(len(examples), 1), 3)} | {
        "reasons": report.as_dict()["reasons"]
    }


def run_ablations(
    settings: Ablations,
    config,
    output: Path,
    registry: Registry,
    echo: Callable[[str], None],
) -> dict:
    root = output / ABLATIONS_DIR
    results_file = output / ABLATIONS_FILE
    results = json.loads(results_file.read_text()) if results_file.is_file() else {"teachers": {}, "variants": {}}
    main = output / "distilled"

    def save() -> None:
        atomic_write_json(results_file, results)

    # Teachers, on the first examples of the data.
    if settings.teachers and "main" not in results["teachers"]:
        results["teachers"]["main"] = {
            "teacher": config.distill.teacher,
            "teacher_prompt": config.distill.teacher_prompt,
            **_filter_share(main, registry, settings.teacher_examples),
            "examples_per_hour": _examples_per_hour(main),
        }
        save()
    for name, variant in settings.teachers.items():
        if name in results["teachers"]:
            continue
        echo(f"  teacher {name}: {variant.teacher}, {variant.teacher_prompt} ...")
        started = time.perf_counter()
        summary = distill(
            config.data,
            root / f"teacher-{name}",
            DistillConfig(
                decomposition=config.decomposition,
                teacher=variant.teacher,
                teacher_prompt=variant.teacher_prompt,
                limit=settings.teacher_examples,
                batch_size=variant.batch_size,
                seed=config.seed,
            ),
            progress=False,
            registry=registry,
        )
        results["teachers"][name] = {
            "teacher": variant.teacher,
            "teacher_prompt": variant.teacher_prompt,
            **_filter_share(root / f"teacher-{name}", registry, settings.teacher_examples),
            "examples_per_hour": round(summary.examples_distilled / max(summary.seconds, 1e-9) * 3600, 1)
            if summary.examples_distilled
            else None,
            "seconds": round(time.perf_counter() - started, 1),
        }
        save()
        echo(f"  teacher {name}: kept {results['teachers'][name]['kept_share']:.0%} of its targets")

    # Training variants: trained on the first examples of the main distillation, all scored on the filtered
    # examples of the next shards, which no variant trains on.
    if not settings.variants:
        return results
    sliced = root / "distilled-slice"
    trained_on = _shards(main, settings.train_examples, sliced)
    held_out: list = []
    if _shards(main, settings.held_out_examples, root / "held-out-raw", skip=trained_on):
        if not (root / "held-out").is_dir():
            # Scored on what the main run trains on: filtered the same way.
            filter_distilled(root / "held-out-raw", root / "held-out", registry=registry, check=config.filter_targets)
        if shard_folders(root / "held-out"):
            held_out_data = load_distilled(root / "held-out")
            held_out = held_out_data.examples()
    if not held_out:
        raise InputError(
            f"ablations: no usable examples in the shards after the first {trained_on} to score the variants on; "
            "distil more examples or lower ablations.train_examples"
        )
    decomposition = registry.decomposition(config.decomposition, field="decomposition")
    for name, variant in settings.variants.items():
        if name in results["variants"]:
            continue
        echo(f"  variant {name} ...")
        data_folder = root / f"data-{'filtered' if variant.filter_targets else 'all'}"
        if not data_folder.is_dir():
            filter_distilled(sliced, data_folder, registry=registry, check=variant.filter_targets)
        train_config = validate_settings(
            TrainConfig,
            {"seed": config.seed, **settings.train, **variant.train, "eval_fraction": 0.0, "evaluators": ()},
            f"ablation {name}",
        )
        stack = decomposition.build(config.student, name=f"{config.name}-{name}")
        started = time.perf_counter()
        result = train_stack(
            data_folder, root / f"stack-{name}", train_config, stack=stack, progress=False, registry=registry
        )
        trained = load_stack(root / f"stack-{name}")
        losses = score_stages(
            trained,
            held_out_data,
            [example.example_id for example in held_out],
            evaluators=("target-loss",),
            batch_size=train_config.eval_batch_size,
            max_length=train_config.max_length,
            registry=registry,
        )
        stages = check_stage_roles(trained.run([example.prompt for example in held_out]), held_out, decomposition)
        results["variants"][name] = {
            "filter_targets": variant.filter_targets,
            "train": {**settings.train, **variant.train},
            "training_examples": {stage: info.examples for stage, info in result.stages.items()},
            "target_loss": {stage: scores.get("target_loss") for stage, scores in losses.items()},
            "base_target_loss": {stage: scores.get("base_target_loss") for stage, scores in losses.items()},
            "held_out_examples": len(held_out),
            "stages": stages,
            "seconds": round(time.perf_counter() - started, 1),
        }
        save()
        rates = ", ".join(f"{stage} {info['role_pass_rate']:.2f}" for stage, info in stages.items())
        echo(f"  variant {name}: role checks passed {rates}")
    return results
