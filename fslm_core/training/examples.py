"""Training examples: the held-out split, each stage's (input, target) pairs, and batches per epoch and process."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..distillation.distilled_data import DistilledExample, targets_trace
from ..runtime import BoundStack, render_stage_prompt


def split_examples(
    examples: Sequence[DistilledExample], eval_fraction: float, max_eval: int, seed: int
) -> tuple[list[DistilledExample], list[DistilledExample]]:
    """Training and held-out examples; the same for the same data and seed."""
    count = len(examples)
    held = min(round(count * eval_fraction), max_eval)
    if eval_fraction > 0 and max_eval > 0 and count >= 2:
        held = max(held, 1)
    held = min(held, count - 1)
    ids = sorted(example.example_id for example in examples)
    random.Random(seed).shuffle(ids)
    held_out = set(ids[:held])
    return [e for e in examples if e.example_id not in held_out], [e for e in examples if e.example_id in held_out]


def stage_pairs(bound: BoundStack, stage_name: str, examples: Sequence[DistilledExample]) -> list[tuple[str, str]]:
    """(model input, target) of one stage for each example with a non-empty target.

    The input is built by the engine from the prompt and the targets of the
    stages this stage reads, as if those stages had written them.
    """
    stage = bound.stack.stage(stage_name)
    formats = bound.formats
    pairs = []
    for example in examples:
        target = example.targets.get(stage_name, "").strip()
        if not target:
            continue
        upstream = {name: example.targets[name] for name in stage.reads if name in example.targets}
        trace = targets_trace(bound.stack.name, example.prompt, upstream, formats, stage.model)
        pairs.append((render_stage_prompt(bound, stage, trace), target))
    return pairs


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indices per batch for one epoch: shuffled, then grouped by length to pad little.

    Within each window of 32 batches the examples are sorted by length; the
    batches are then shuffled, so the order is random but padding is small.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 32
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda index: -lengths[index])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def process_share(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's batches; every process gets the same count (data parallel steps in lockstep)."""
    if world == 1:
        return batches
    padded = batches + batches[: (-len(batches)) % world]
    return padded[rank::world]
