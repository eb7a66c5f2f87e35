"""``fslm experiment CONFIG --verify``: rerun finished results and check they reproduce, document by document.

Each chosen (system, task) result is evaluated again with the experiment's own
plan (same documents, batch size, seed, dtype), into a scratch folder that is
thrown away, and its per-document scores are compared with the recorded ones
exactly: a published table reproduces to the last digit only if every document
does. The code commit of both runs is shown, so a mismatch can be told apart
from a change of code.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import InputError
from .eval_runs import EvalPlan, Evaluator, read_result


@dataclass(frozen=True)
class Verification:
    """One result rerun: how many documents it scores, which differ, and the code behind each run."""

    system: str
    task: str
    documents: int
    differing: tuple[str, ...]
    recorded_commit: str | None
    rerun_commit: str | None

    @property
    def reproduced(self) -> bool:
        return not self.differing

    def line(self) -> str:
        where = f"{self.system} on {self.task}"
        code = f"recorded by {self.recorded_commit or 'unrecorded code'}, rerun on {self.rerun_commit}"
        if self.reproduced:
            return f"{where}: all {self.documents} document scores reproduced ({code})"
        shown = ", ".join(self.differing[:10]) + (" ..." if len(self.differing) > 10 else "")
        return f"{where}: {len(self.differing)} of {self.documents} document scores differ: {shown} ({code})"


def chosen_pairs(plan: EvalPlan, output: Path, wanted: Sequence[str]) -> list[tuple[str, str]]:
    """The (system, task) results named by ``wanted`` (``system:task``, ``system``, ``:task`` or ``all``)
    that have finished; a name the experiment does not have is refused."""
    finished = [
        (system, task)
        for task in plan.tasks
        for system in plan.systems
        if read_result(output, system, task) is not None
    ]
    chosen: list[tuple[str, str]] = []
    for item in wanted:
        system, _, task = item.partition(":")
        if item == "all":
            system, task = "", ""
        if system and system not in plan.systems:
            raise InputError(f"--verify {item}: no system {system!r} (systems: {', '.join(plan.systems)})")
        if task and task not in plan.tasks:
            raise InputError(f"--verify {item}: no task {task!r} (tasks: {', '.join(plan.tasks)})")
        matching = [pair for pair in finished if (not system or pair[0] == system) and (not task or pair[1] == task)]
        if not matching:
            raise InputError(f"--verify {item}: no finished result to rerun")
        chosen += [pair for pair in matching if pair not in chosen]
    return chosen


def verify(
    plan: EvalPlan, output: Path, wanted: Sequence[str], echo: Callable[[str], None] = print
) -> list[Verification]:
    """Rerun the results ``wanted`` names (see :func:`chosen_pairs`) and compare every document's score."""
    checked = []
    for system, task in chosen_pairs(plan, output, wanted):
        recorded = read_result(output, system, task)
        with tempfile.TemporaryDirectory(prefix="fslm-verify-") as scratch:
            alone = replace(plan, systems={system: plan.systems[system]}, tasks=(task,))
            Evaluator(alone, Path(scratch), echo).run()
            rerun = read_result(Path(scratch), system, task)
        if rerun["doc_ids"] != recorded["doc_ids"]:
            raise InputError(
                f"--verify {system}:{task}: the rerun chose other documents than the recorded result "
                "(the config or the task's data changed)"
            )
        differing = tuple(doc for doc, score in recorded["scores"].items() if rerun["scores"].get(doc) != score)
        result = Verification(
            system,
            task,
            len(recorded["scores"]),
            differing,
            recorded.get("provenance", {}).get("commit"),
            rerun["provenance"]["commit"],
        )
        echo(result.line())
        checked.append(result)
    return checked
