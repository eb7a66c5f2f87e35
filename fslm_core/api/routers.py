"""Routers: which stages run, in which waves, and for which inputs.

A router turns a stack into waves: lists of stages that may run together
because none reads another's message. Stages of one wave on the same base
model run as one mixed-adapter batch. Per input, a router may skip a stage
(:meth:`Router.before_stage`) or, once a stage has written its message, send
the input out of the stack (:meth:`Router.after_stage`); the engine records
each decision in the trace and batches the inputs still on each path. A reader
of a skipped stage sees "(none)".
"""

from __future__ import annotations

import re
from typing import ClassVar

from ..declarations import PROMPT_FIELD, Condition, Dispatch, Stack, Stage
from ..messages import RoutingDecision, Trace

#: The routing rules a stack can declare, by the field that declares them.
RULES = ("run_if", "exit_if", "dispatch")


class Router:
    """Base router: one stage per wave, in declared order, every stage for every input."""

    name = "sequential"
    description = "Each stage in declared order, one at a time."
    #: The routing rules of :data:`RULES` this router applies; a stack declaring another is refused.
    applies: ClassVar[frozenset[str]] = frozenset()

    def waves(self, stack: Stack) -> list[list[Stage]]:
        return [[stage] for stage in stack.stages]

    def should_run(self, stage: Stage, trace: Trace) -> bool:
        """Whether ``stage`` runs for this input; a router needing only this overrides it."""
        return True

    def before_stage(self, stack: Stack, stage: Stage, trace: Trace) -> RoutingDecision | None:
        """None to run ``stage`` for this input, or the decision that skips it."""
        if self.should_run(stage, trace):
            return None
        return RoutingDecision(stage=stage.name, decision="skipped", router=self.name)

    def after_stage(self, stack: Stack, stage: Stage, trace: Trace) -> RoutingDecision | None:
        """A decision taken once ``stage``'s message is in the trace: ``"exit"`` ends the input's run there."""
        return None


def declared_rules(stack: Stack) -> dict[str, str]:
    """Each routing rule the stack declares, with the field that declares it first."""
    found: dict[str, str] = {}
    if stack.dispatch is not None:
        found["dispatch"] = "dispatch"
    for index, stage in enumerate(stack.stages):
        for rule in ("run_if", "exit_if"):
            if getattr(stage, rule) is not None:
                found.setdefault(rule, f"stages.{index}.{rule}")
    return found


def subject(condition: Condition, trace: Trace) -> tuple[str, float | None] | None:
    """The text a condition tests and, for a stage, its mean log-probability; None if that stage did not run."""
    if condition.stage == PROMPT_FIELD:
        return trace.prompt, None
    message = trace.message(condition.stage)
    if message is None:
        return None
    return message.text, getattr(message, "mean_logprob", None)


def holds(condition: Condition, trace: Trace) -> bool:
    tested = subject(condition, trace)
    if tested is None:
        return False
    text, mean_logprob = tested
    result = True
    if condition.contains is not None:
        result &= condition.contains.lower() in text.lower()
    if condition.matches is not None:
        result &= re.search(condition.matches, text, flags=re.IGNORECASE) is not None
    if condition.min_mean_logprob is not None:
        result &= mean_logprob is not None and mean_logprob >= condition.min_mean_logprob
    return result != condition.negate


def describe(condition: Condition) -> str:
    tests = []
    if condition.contains is not None:
        tests.append(f"contains {condition.contains!r}")
    if condition.matches is not None:
        tests.append(f"matches /{condition.matches}/")
    if condition.min_mean_logprob is not None:
        tests.append(f"mean log-probability >= {condition.min_mean_logprob}")
    return ("not: " if condition.negate else "") + f"{condition.stage} " + " and ".join(tests)


def chosen_route(dispatch: Dispatch, trace: Trace) -> tuple[str, bool] | None:
    """The route the classifier's message names (the label found first, ignoring case) and whether it named one
    (else the default route); None before the classifier ran."""
    message = trace.message(dispatch.classifier)
    if message is None:
        return None
    text = message.text.lower()
    found = [(text.find(label.lower()), label) for label in dispatch.routes if label.lower() in text]
    return (min(found)[1], True) if found else (dispatch.fallback, False)


class RuleRouter(Router):
    """Applies the routing rules a stack declares (``run_if``, ``exit_if``, ``dispatch``), in declared order."""

    def __init__(self, name: str, description: str, applies: frozenset[str]):
        self.name = name
        self.description = description
        self.applies = applies

    def before_stage(self, stack: Stack, stage: Stage, trace: Trace) -> RoutingDecision | None:
        dispatch = stack.dispatch
        if "dispatch" in self.applies and dispatch is not None and stage.name != dispatch.classifier:
            routed = {name for stages in dispatch.routes.values() for name in stages}
            chosen = chosen_route(dispatch, trace)
            if stage.name in routed and chosen is not None and stage.name not in dispatch.routes[chosen[0]]:
                return self.decision(stage, "skipped", f"not on route {chosen[0]!r}")
        if "run_if" in self.applies and stage.run_if is not None and not holds(stage.run_if, trace):
            return self.decision(stage, "skipped", f"run_if does not hold: {describe(stage.run_if)}")
        return None

    def after_stage(self, stack: Stack, stage: Stage, trace: Trace) -> RoutingDecision | None:
        dispatch = stack.dispatch
        if "dispatch" in self.applies and dispatch is not None and stage.name == dispatch.classifier:
            chosen = chosen_route(dispatch, trace)
            if chosen is None:
                return None
            route, named = chosen
            how = "named by the classifier" if named else "no label found: the default"
            return self.decision(stage, "dispatch", f"route {route!r} ({how})")
        if "exit_if" in self.applies and stage.exit_if is not None and holds(stage.exit_if, trace):
            return self.decision(stage, "exit", f"exit_if holds: {describe(stage.exit_if)}")
        return None

    def decision(self, stage: Stage, decision: str, reason: str) -> RoutingDecision:
        return RoutingDecision(stage=stage.name, decision=decision, router=self.name, reason=reason)


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


BUILTIN_ROUTERS = (
    Router(),
    ParallelRouter(),
    RuleRouter(
        "early-exit",
        "Stages in order; after a stage with exit_if, inputs where it holds leave with that stage's answer.",
        frozenset({"exit_if"}),
    ),
    RuleRouter(
        "conditional",
        "Stages in order; a stage with run_if runs only for inputs where it holds.",
        frozenset({"run_if"}),
    ),
    RuleRouter(
        "dispatch",
        "Stages in order; the stack's dispatch classifier picks which route's stages run for each input.",
        frozenset({"dispatch", "run_if"}),
    ),
    RuleRouter(
        "rules",
        "Stages in order, applying every routing rule the stack declares: run_if, exit_if and dispatch.",
        frozenset(RULES),
    ),
)
