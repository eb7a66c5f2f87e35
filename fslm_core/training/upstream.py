"""What a later stage reads while it trains: the teacher's targets, or what the trained earlier stages write.

Trained on the teacher's targets only (teacher forcing), a later stage never
sees the mistakes of the stages before it, yet in use it reads nothing else
(exposure bias). With ``upstream_inputs="generated"`` a stage is trained on
the messages the already-trained earlier stages write for its training
prompts; with ``"mixed"``, a seeded half of its examples read those and the
rest read the targets. The target it learns to write is the teacher's either
way.

The earlier stages' messages are generated once per stage, on a copy of the
base model of their own (the copy being trained stays without adapters), and
kept in ``generated/<stage>.json`` of the output folder, so a resumed run
does not generate them again.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from pathlib import Path

from ..declarations import Stack
from ..distillation.distilled_data import DistilledExample, targets_trace
from ..files import atomic_write_json
from ..logs import get_logger
from ..plugins import Registry
from ..runtime import bind_stack, render_stage_prompt
from ..runtime.pool import ModelPool

GENERATED_DIR = "generated"

log = get_logger(__name__)


def upstream_stages(stack: Stack, name: str) -> list[str]:
    """The stages ``name`` reads, directly or through the stages it reads, in stack order."""
    needed: set[str] = set()
    pending = list(stack.stage(name).reads)
    while pending:
        current = pending.pop()
        if current not in needed:
            needed.add(current)
            pending.extend(stack.stage(current).reads)
    return [stage.name for stage in stack.stages if stage.name in needed]


class GeneratedUpstream:
    """The trained earlier stages' messages for the training examples, generated on demand and kept on disk."""

    def __init__(self, trained: Stack, folder: Path, examples: Sequence[DistilledExample], registry: Registry):
        self.trained = trained
        self.folder = folder / GENERATED_DIR
        self.examples = list(examples)
        self.registry = registry
        self._bound = None
        self.texts: dict[str, dict[int, str]] = {}

    def _load(self, name: str) -> dict[int, str] | None:
        path = self.folder / f"{name}.json"
        if not path.is_file():
            return None
        stored = json.loads(path.read_text(encoding="utf-8"))
        texts = {int(key): value for key, value in stored.items()}
        if set(texts) != {example.example_id for example in self.examples}:
            return None  # written for other examples: generate again
        return texts

    def messages(self, name: str) -> dict[int, str]:
        """Example id -> what stage ``name`` writes for it, reading what its own earlier stages wrote."""
        if name in self.texts:
            return self.texts[name]
        loaded = self._load(name)
        if loaded is not None:
            self.texts[name] = loaded
            return loaded
        stage = self.trained.stage(name)
        upstream = {read: self.messages(read) for read in stage.reads}
        if self._bound is None:
            self._bound = bind_stack(self.trained, self.registry, ModelPool())
        item = self._bound.stages[name]
        prompts = []
        for example in self.examples:
            reads = {read: upstream[read][example.example_id] for read in stage.reads}
            trace = targets_trace(self.trained.name, example.prompt, reads, self._bound.formats, stage.model)
            prompts.append(render_stage_prompt(self._bound, stage, trace))
        log.info("generating an earlier stage's messages for training", stage=name, examples=len(prompts))
        generations = item.backend.generate(
            prompts, [item.adapter_name] * len(prompts), stage.generation, batch_size=32
        )
        texts = {example.example_id: g.text for example, g in zip(self.examples, generations)}
        atomic_write_json(self.folder / f"{name}.json", {str(key): value for key, value in texts.items()})
        self.texts[name] = texts
        return texts


def with_upstream_inputs(
    examples: Sequence[DistilledExample],
    stack: Stack,
    name: str,
    mode: str,
    generated: GeneratedUpstream,
    seed: int,
) -> list[DistilledExample]:
    """``examples`` whose earlier stages' targets are replaced by generated messages (all, or a seeded half)."""
    reads = upstream_stages(stack, name)
    if mode == "targets" or not reads:
        return list(examples)
    messages = {read: generated.messages(read) for read in reads}
    result = []
    for example in examples:
        if mode == "mixed" and random.Random(f"{seed}:{name}:{example.example_id}").random() < 0.5:
            result.append(example)
            continue
        targets = dict(example.targets)
        for read in reads:
            targets[read] = messages[read][example.example_id]
        result.append(dataclasses.replace(example, targets=targets))
    return result
