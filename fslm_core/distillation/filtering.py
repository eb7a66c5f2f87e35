"""A filtered copy of a distillation folder: the examples whose targets pass their checks, tidied.

The copy has the layout ``fslm distill`` writes (a manifest and shards), so
``fslm train`` reads it like any distilled data; its manifest names the source
folder and what was dropped, and why.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..api.decompositions import Decomposition
from ..files import write_folder_atomically
from ..plugins import Registry, get_registry
from ..runtime import stage_input
from .distilled_data import DistilledExample, load_distilled, targets_trace
from .role_checks import FilterReport, filter_examples
from .shards import MANIFEST, REFERENCE, TEACHER, write_shard


def _rows(example: DistilledExample, decomposition: Decomposition, registry: Registry, teacher: str) -> list[dict]:
    stack = decomposition.build("filtered", name=decomposition.name)
    formats = {stage.name: registry.format(stage.format) for stage in stack.stages}
    reference_stage = stack.stages[-1].name
    rows, done = [], {}
    for index, stage in enumerate(stack.stages):
        if stage.name not in example.targets:
            continue
        trace = targets_trace(stack.name, example.prompt, {name: done[name] for name in stage.reads}, formats, teacher)
        text = example.targets[stage.name]
        done[stage.name] = text
        source = REFERENCE if stage.name == reference_stage else TEACHER
        rows.append(
            {
                "example_id": example.example_id,
                "prompt": example.prompt,
                "stage": stage.name,
                "stage_index": index,
                "stage_input": stage_input(stage, trace, formats),
                "target": text,
                "target_source": source,
                "teacher": teacher if source == TEACHER else REFERENCE,
                "teacher_reply": "",
                "hit_token_limit": False,
            }
        )
    return rows


def filter_distilled(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    registry: Registry | None = None,
    shard_size: int = 256,
    check: bool = True,
) -> FilterReport:
    """Write the examples of ``source`` that pass their checks (tidied) to ``output``, replacing it whole.

    ``check=False`` copies every example unchanged (a run that keeps all targets).
    """
    registry = registry or get_registry()
    data = load_distilled(source)
    decomposition = registry.decomposition(data.decomposition, field="decomposition")
    examples = data.examples()
    if check:
        report = filter_examples(examples, decomposition)
    else:
        report = FilterReport(kept=list(examples), dropped=[])
    teacher = data.manifest["identity"].get("teacher", TEACHER)
    manifest = {
        **{key: value for key, value in data.manifest.items() if key != MANIFEST.marker},
        "examples": len(report.kept),
        "filtered_from": str(data.folder),
        "source_fingerprint": data.fingerprint,
        "filter": report.as_dict() | {"checked": check},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def write(folder: Path) -> None:
        folder.mkdir(parents=True)
        for index, start in enumerate(range(0, len(report.kept), shard_size)):
            rows = [
                row
                for example in report.kept[start : start + shard_size]
                for row in _rows(example, decomposition, registry, teacher)
            ]
            write_shard(folder, index, rows)
        manifest["shards"] = len(range(0, len(report.kept), shard_size))
        MANIFEST.write(folder, manifest)

    write_folder_atomically(Path(output).expanduser().resolve(), write)
    return report
