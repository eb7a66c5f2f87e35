"""What a run cost, per stage: tokens, wall time, parameters, cache hits and an estimate of the arithmetic.

Read from the traces alone (every message carries its tokens, its batch's wall
time and size, and whether it came from the stage cache), so the same table
can be made for a run that has finished, or from traces saved to a file.

Wall time: a message's share of its batch, ``latency_s / batch_size``, summed
over the stage's messages; a cached message costs none. FLOPs: about two per
parameter per token processed (prompt and generated tokens, base model plus
adapter), the usual estimate for a forward pass; attention over the context is
left out, which undercounts long prompts.

Without the stack (traces read back from a file), :func:`traced_stage_costs`
takes each stage's model and adapter from its messages; a model id or adapter
folder this machine does not know leaves its parameters and FLOPs unknown.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..declarations import Stack
from ..errors import UnknownNameError
from ..messages import Trace
from ..plugins import Registry, get_registry


def adapter_parameters(adapter: Path | None) -> int:
    """Parameters in a PEFT adapter folder, read from its safetensors header (no tensors loaded)."""
    if adapter is None:
        return 0
    file = Path(adapter) / "adapter_model.safetensors"
    if not file.is_file():
        return 0
    with open(file, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    total = 0
    for name, info in header.items():
        if name != "__metadata__":
            count = 1
            for size in info["shape"]:
                count *= size
            total += count
    return total


@dataclass(frozen=True)
class StageCost:
    stage: str
    runs: int
    cached: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    base_parameters: int | None
    adapter_parameters: int | None

    @property
    def flops(self) -> float | None:
        if self.base_parameters is None or self.adapter_parameters is None:
            return None
        uncached = self.runs - self.cached
        share = uncached / self.runs if self.runs else 0.0
        tokens = (self.prompt_tokens + self.completion_tokens) * share
        return 2.0 * (self.base_parameters + self.adapter_parameters) * tokens

    def as_dict(self) -> dict:
        return {
            "stage": self.stage,
            "runs": self.runs,
            "cached": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": round(self.seconds, 3),
            "base_parameters": self.base_parameters,
            "adapter_parameters": self.adapter_parameters,
            "flops": self.flops,
        }


def _stage_cost(
    name: str, traces: Sequence[Trace], base_parameters: int | None, adapter_count: int | None
) -> StageCost:
    messages = [m for trace in traces if (m := trace.message(name)) is not None]
    fresh = [m for m in messages if not m.cached]
    return StageCost(
        stage=name,
        runs=len(messages),
        cached=len(messages) - len(fresh),
        prompt_tokens=sum(m.prompt_tokens for m in messages),
        completion_tokens=sum(m.completion_tokens for m in messages),
        seconds=sum(m.latency_s / m.batch_size for m in fresh),
        base_parameters=base_parameters,
        adapter_parameters=adapter_count,
    )


def stage_costs(stack: Stack, traces: Sequence[Trace], registry: Registry | None = None) -> list[StageCost]:
    """One row per stage of ``stack``, in order, summed over ``traces``."""
    registry = registry or get_registry()
    rows = []
    for stage in stack.stages:
        parameters = _base_parameters(stage.model, registry) if stage.model else 0  # a tool stage has no model
        rows.append(_stage_cost(stage.name, traces, parameters, adapter_parameters(stage.adapter)))
    return rows


def traced_stage_costs(traces: Sequence[Trace], registry: Registry | None = None) -> list[StageCost]:
    """One row per stage that wrote a message in ``traces``, without the stack that ran them.

    Stages come in the order they ran (a stage that only some inputs ran is
    placed after the stage it followed there); each stage's model and adapter
    are those its first message names.
    """
    registry = registry or get_registry()
    rows = []
    for name in stage_order(traces):
        first = next(m for trace in traces if (m := trace.message(name)) is not None)
        rows.append(_stage_cost(name, traces, _base_parameters(first.model, registry), _known_adapter(first.adapter)))
    return rows


def stage_order(traces: Sequence[Trace]) -> list[str]:
    """Every stage that wrote a message in ``traces``, in the order the stages ran."""
    order: list[str] = []
    for trace in traces:
        previous = None
        for message in trace.messages:
            if message.stage not in order:
                order.insert(order.index(previous) + 1 if previous is not None else len(order), message.stage)
            previous = message.stage
    return order


def _base_parameters(model_id: str, registry: Registry) -> int | None:
    if model_id.startswith("tool:"):
        return 0
    if model_id.startswith("hf:"):
        return None
    try:
        return registry.model(model_id).parameters
    except UnknownNameError:  # traces from a machine with other model plugins installed
        return None


def _known_adapter(adapter: str | None) -> int | None:
    if adapter is None:
        return 0
    if not (Path(adapter) / "adapter_model.safetensors").is_file():
        return None  # the folder the run used is not on this machine
    return adapter_parameters(Path(adapter))


def _count(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"


def _total(values: Sequence[float | None]) -> float | None:
    return None if None in values else sum(values)  # type: ignore[arg-type]


COST_COLUMNS = ("stage", "runs", "cached", "in tok", "out tok", "seconds", "params", "adapter", "FLOPs")


def cost_cells(rows: Sequence[StageCost]) -> list[tuple[str, ...]]:
    """The cost table's cells as text, one tuple per stage and a last one for the total (columns: COST_COLUMNS)."""
    cells = []
    for row in rows:
        cells.append(
            (
                row.stage,
                str(row.runs),
                str(row.cached),
                str(row.prompt_tokens),
                str(row.completion_tokens),
                f"{row.seconds:.2f}",
                _count(row.base_parameters),
                _count(row.adapter_parameters),
                _count(row.flops),
            )
        )
    cells.append(
        (
            "total",
            str(sum(row.runs for row in rows)),
            str(sum(row.cached for row in rows)),
            str(sum(row.prompt_tokens for row in rows)),
            str(sum(row.completion_tokens for row in rows)),
            f"{sum(row.seconds for row in rows):.2f}",
            "",
            _count(_total([row.adapter_parameters for row in rows])),
            _count(_total([row.flops for row in rows])),
        )
    )
    return cells


def render_costs(rows: Sequence[StageCost]) -> str:
    """A plain-text table with a total row."""
    lines = [COST_COLUMNS, *cost_cells(rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COST_COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(line, widths))
        )
        for line in lines
    )
