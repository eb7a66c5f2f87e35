"""``fslm experiment`` on a comparison: every declared system on every task, on the same documents, then a report.

Steps, each resumable: ``eval`` writes one result file per (system, task) as
it finishes (:mod:`.eval_runs`, with every document's score and the code's
commit); ``demo`` keeps the first system's traces of the demo prompts;
``report`` reads them all back and writes the Markdown report
(:mod:`.comparison_report`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from ..declarations import Stack, with_dtype
from ..files import atomic_write_text
from ..runtime.stack_choice import SINGLE_MODEL_INSTRUCTION, resolve_stack, single_model_stack
from .comparison_config import ComparisonConfig, SystemDeclaration
from .comparison_report import DEMO_FILE, write_comparison_report
from .eval_runs import EvalPlan, Evaluator

COMPARISON_STEPS = ("eval", "demo", "report")


def system_stack(declaration: SystemDeclaration, dtype: str | None) -> Stack:
    """The stack a declared system runs: its stack, or its model alone."""
    if declaration.stack is not None:
        stack = resolve_stack(declaration.stack)
    else:
        stack = single_model_stack(declaration.model, instruction=declaration.instruction or SINGLE_MODEL_INSTRUCTION)
    return with_dtype(stack, dtype)


def comparison_plan(config: ComparisonConfig) -> EvalPlan:
    evaluation = config.evaluation
    return EvalPlan(
        systems={
            name: functools.partial(system_stack, declaration, config.dtype)
            for name, declaration in config.systems.items()
        },
        tasks=evaluation.tasks,
        seed=config.seed,
        documents=evaluation.documents,
        generation_documents=evaluation.generation_documents,
        document_ranges=dict(evaluation.document_ranges),
        batch_size=evaluation.batch_size,
        max_gen_toks=evaluation.max_gen_toks,
        num_fewshot=evaluation.num_fewshot,
        traces_per_task=evaluation.traces_per_task,
        dtype=config.dtype,
    )


def run_comparison(
    config: ComparisonConfig,
    *,
    only: str | None = None,
    until: str | None = None,
    echo: Callable[[str], None] = print,
    command: str | None = None,
) -> None:
    """Run (or resume) the comparison's steps; ``only`` runs one of them, ``until`` stops after one."""
    from ..errors import InputError

    for name in (only, until):
        if name is not None and name not in COMPARISON_STEPS:
            raise InputError(f"step: {name!r} is not a step of a comparison ({', '.join(COMPARISON_STEPS)})")
    if config.output.exists() and not config.output.is_dir():
        raise InputError(f"output: {config.output} is a file; give a folder")
    config.output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config.output / "comparison.json", config.model_dump_json(indent=1))
    plan = comparison_plan(config)
    for step in COMPARISON_STEPS:
        if only is not None and step != only:
            continue
        echo(f"step {step}")
        if step == "eval":
            Evaluator(plan, config.output, echo).run()
        elif step == "demo":
            write_demo(config, plan, echo)
        else:
            path = write_comparison_report(config, config.output, command)
            echo(f"  report: {path}")
        if step == until:
            break


def write_demo(config: ComparisonConfig, plan: EvalPlan, echo: Callable[[str], None]) -> None:
    """The first system's traces of the demo prompts, kept beside the results (once; delete the file to redo)."""
    path = config.output / DEMO_FILE
    if not config.demo_prompts or path.is_file():
        echo("  done earlier" if path.is_file() else "  no demo prompts")
        return
    first = next(iter(plan.systems))
    traces = plan.systems[first]().run(list(config.demo_prompts), seed=config.seed)
    atomic_write_text(path, "".join(trace.to_json() + "\n" for trace in traces))
    echo(f"  {len(traces)} traces of {first}")
