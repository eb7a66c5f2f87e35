"""Routers: which stages run, in which waves.

A router turns a stack into waves: lists of stages that may run together
because none reads another's message. Stages of one wave on the same base
model run as one mixed-adapter batch. A router may also skip a stage for a
given input (``should_run``); a reader of a skipped stage sees "(none)".
"""

from __future__ import annotations

from ..declarations import Stack, Stage
from ..messages import Trace


class Router:
    """Base router: one stage per wave, in declared order, every stage for every input."""

    name = "sequential"
    description = "Each stage in declared order, one at a time."

    def waves(self, stack: Stack) -> list[list[Stage]]:
        return [[stage] for stage in stack.stages]

    def should_run(self, stage: Stage, trace: Trace) -> bool:
        return True


class ParallelRouter(Router):
    """Stages whose inputs are ready run together: wave k holds stages at read-depth k."""

    name = "parallel"
    description = "Stages that read no message of each other run in one mixed-adapter batch."

    def waves(self, stack: Stack) -> list[list[Stage]]:
        depth: dict[str, int] = {}
        for stage in stack.stages:
            depth[stage.name] = 1 + max((depth[read] for read in stage.reads), default=-1)
        waves: list[list[Stage]] = [[] for _ in range(max(depth.values()) + 1)]
        for stage in stack.stages:
            waves[depth[stage.name]].append(stage)
        # The final stage writes the answer: keep it last even if it reads nothing.
        final = stack.final_stage
        if waves[-1] != [final]:
            for wave in waves:
                if final in wave:
                    wave.remove(final)
            waves = [wave for wave in waves if wave] + [[final]]
        return waves


BUILTIN_ROUTERS = (Router(), ParallelRouter())
