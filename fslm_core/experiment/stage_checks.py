"""Do the trained stages do their roles? Held-out checks of the trained stack against the untrained one.

On the examples training held out, both stacks run end to end (each stage
reads what the earlier stages of the same stack wrote, as in use). For each
stage: the share of outputs that pass its role checks (a restatement that
does not answer, a list...), the mean tokens it wrote, and the most common
failures; for the final stage, token F1 against the reference answer. The
target loss of each stage with and without its adapter comes from training's
own held-out scores. The demo prompts' traces go into the report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..api.evaluators import TokenF1
from ..distillation import DistilledData
from ..distillation.role_checks import role_problem
from ..files import atomic_write_json
from ..plugins import Registry
from ..training import TrainConfig, split_examples
from .config import ExperimentConfig
from .systems import system_stack

CHECKS_FILE = "stage_checks.json"


def check_stage_roles(traces, examples, decomposition) -> dict:
    """Per stage of ``decomposition``: role-check pass rate, failures, tokens written (and F1 for the last)."""
    final_stage = decomposition.stages[-1].name
    stages: dict[str, dict] = {}
    for recipe in decomposition.stages:
        problems: Counter = Counter()
        passed, tokens, f1 = 0, 0, 0.0
        for trace, example in zip(traces, examples):
            message = trace.message(recipe.name)
            reference = example.targets.get(final_stage, "")
            tokens += message.completion_tokens
            problem = role_problem(message.text, example.prompt, reference, recipe.checks)
            if problem:
                problems[problem] += 1
            else:
                passed += 1
            if recipe.name == final_stage:
                f1 += TokenF1.f1(message.text, reference)
        count = max(len(examples), 1)
        stages[recipe.name] = {
            "checks": list(recipe.checks),
            "role_pass_rate": round(passed / count, 4),
            "problems": dict(problems.most_common()),
            "mean_completion_tokens": round(tokens / count, 1),
        }
        if recipe.name == final_stage:
            stages[recipe.name]["token_f1"] = round(f1 / count, 4)
    return stages


def run_stage_checks(
    config: ExperimentConfig,
    output: Path,
    data: DistilledData,
    train_config: TrainConfig,
    registry: Registry,
    echo: Callable[[str], None],
) -> dict:
    decomposition = registry.decomposition(config.decomposition, field="decomposition")
    _, held_out = split_examples(
        data.examples(), train_config.eval_fraction, train_config.max_eval_examples, train_config.seed
    )
    stacks = {label: system_stack(f"stack-{label}", config, output, registry) for label in ("trained", "untrained")}
    prompts = [example.prompt for example in held_out]
    checks: dict = {"held_out_examples": len(held_out), "stacks": {}, "demo": {}}
    for label, stack in stacks.items():
        traces = stack.run(prompts) if prompts else []
        checks["stacks"][label] = check_stage_roles(traces, held_out, decomposition)
        if config.demo_prompts:
            checks["demo"][label] = [trace.model_dump(mode="json") for trace in stack.run(list(config.demo_prompts))]
        rates = ", ".join(f"{name} {stage['role_pass_rate']:.2f}" for name, stage in checks["stacks"][label].items())
        echo(f"  {label} stack on {len(held_out)} held-out prompts, role checks passed: {rates}")
    atomic_write_json(output / CHECKS_FILE, checks)
    return {"held_out_examples": len(held_out)}
