"""The experiment's report: accuracy with stderr per task and system, paired tests, costs, stage checks, traces.

Everything in it is read back from the experiment's folder, so the report can
be rewritten at any time from finished results; the sample traces go into a
folder next to it, one Markdown file per task.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import FslmError
from ..files import TMP_PREFIX, atomic_write_text, safe_file_name
from ..plugins import Registry
from ..runtime.costs import adapter_parameters as count_adapter_parameters
from .answer_bias import MostCommonAnswer, correct_options
from .comparisons import mean_and_stderr
from .config import STEPS, ExperimentConfig
from .eval_runs import read_result, upstream_per_option
from .paired_families import POOLED, family, not_comparable
from .provenance import commit_line, result_machines
from .report_sections import ablation_tables, document_traces, stage_table
from .stage_checks import CHECKS_FILE
from .systems import BASELINE_DIR, DESCRIPTIONS, STACK_DIR, trained_folder

COMPARISONS = (("stack-trained", "single"), ("stack-trained", "single-lora"), ("stack-trained", "stack-untrained"))


def adapter_parameters(folder: Path) -> int:
    """Parameters in all the adapters of the stack folder ``folder`` (read from their headers)."""
    adapters = [path for path in folder.glob("adapters/*") if not path.name.startswith(TMP_PREFIX)]
    return sum(count_adapter_parameters(adapter) for adapter in adapters)


def _filter_since_training(steps: dict, filter_targets: bool = True) -> list[str]:
    """A line when the filter ran again after the stack trained and now keeps another number of examples
    (the filtered copy is not kept with a run, and the filter's checks may have changed since)."""
    filtered, trained = steps.get("filter", {}), steps.get("train-stack", {})
    if "kept" not in filtered or not trained:
        return []
    used = trained.get("filter_kept")
    stages = list(trained.get("stages", {}).values())
    if used is None and filter_targets and stages and "examples" in stages[0]:
        # Recorded before training kept the count: every kept example trains every stage (none has an
        # empty target once the filter has run), so the first stage's examples and the held-out ones add up.
        used = stages[0]["examples"] + trained.get("held_out_examples", 0)
    if used is None or used == filtered["kept"]:
        return []
    return [
        f"- The stack was trained on {used} kept examples (finished {trained.get('finished', '-')}); the filter, run "
        f"again since ({filtered.get('finished', '-')}) with the checks of that code, keeps {filtered['kept']}."
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _duration(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _cell(result: dict | None) -> str:
    if result is None:
        return "-"
    mean, stderr = mean_and_stderr(list(result["scores"].values()))
    return f"{mean:.3f} ± {stderr:.3f}{' †' if upstream_per_option(result) else ''}"


def _reading(config: ExperimentConfig, results: dict, families: dict) -> list[str]:
    """Plain sentences: where the trained stack wins or loses, by how much, and what is inside the noise."""
    lines = []
    for a, b in COMPARISONS[:2]:
        wins, losses, noise = [], [], []
        family = families[(a, b)]
        for task, (comparison, adjusted) in family.items():
            if task.startswith(POOLED):
                continue
            item = f"{task} ({comparison.difference:+.3f}, Holm p = {adjusted:.3g})"
            if adjusted < 0.05:
                (wins if comparison.difference > 0 else losses).append(item)
            else:
                noise.append(task)
        if not (wins or losses or noise):
            continue
        parts = [f"Against {DESCRIPTIONS[b]}, the trained stack"]
        parts.append(f" is better on {', '.join(wins)}" if wins else " is better on no task")
        parts.append(f", worse on {', '.join(losses)}" if losses else ", worse on none")
        parts.append(
            f"; on {len(noise)} task(s) ({', '.join(noise)}) the difference is inside the noise "
            "(Holm-adjusted p ≥ 0.05)."
            if noise
            else "."
        )
        for row, (pooled, adjusted) in family.items():
            if not row.startswith(POOLED):
                continue
            verdict = (
                "inside the noise"
                if adjusted >= 0.05
                else ("in the stack's favour" if pooled.difference > 0 else "against the stack")
            )
            which = (
                "these tasks"
                if row.startswith(f"{POOLED} (")
                else f"these tasks but {row.split(' but ')[1].split(' (')[0]}"
            )
            parts.append(
                f" Over the {pooled.documents} documents of {which} the mean difference is "
                f"{pooled.difference:+.3f} (95% interval [{pooled.ci_low:+.3f}, {pooled.ci_high:+.3f}], "
                f"Holm p = {adjusted:.3g}): {verdict}."
            )
        apart = not_comparable(config, results, a, b)
        if apart:
            parts.append(
                f" Left out as not comparable: {', '.join(apart)} (the stack's upstream stages ran once per option, "
                "so its options were scored after different notes)."
            )
        lines.append("".join(parts))
    return lines


def _most_common_answers(config: ExperimentConfig, results: dict) -> dict[str, MostCommonAnswer]:
    """Per multiple-choice task scored right or wrong per document: its documents' correct options.

    Read from the task's data through lm-eval; a task whose data is not at hand is left out.
    """
    from ..lmeval import task_manager

    found: dict[str, MostCommonAnswer] = {}
    manager = None
    for task in config.evaluation.tasks:
        scored = [results[(system, task)] for system in config.systems if (system, task) in results]
        if not scored or not all(set(r["scores"].values()) <= {0.0, 1.0} for r in scored):
            continue  # not a right-or-wrong score (TruthfulQA's mc2 is a probability)
        if scored[0]["output_type"] != "multiple_choice":
            continue
        try:
            manager = manager or task_manager(list(config.evaluation.tasks))
            answers = correct_options(task, scored[0]["doc_ids"], manager)
        except (OSError, FslmError, ValueError):
            continue
        if answers is not None:
            found[task] = answers
    return found


def _lean(config: ExperimentConfig, results: dict, answers: dict[str, MostCommonAnswer]) -> list[str]:
    """Two-option tasks: how often each system gives the most common correct option."""
    rows = [(task, found) for task, found in answers.items() if found.two_options]
    if not rows:
        return []
    lines = [
        "",
        "### The most common answer",
        "",
        "On a two-option task a wrong answer is the other option, so each system's per-document scores say "
        "how often it gave the most common correct option; a system that leans towards it scores up to that "
        "option's share without reading the documents.",
        "",
        "| task | most common correct option | its share (score of always giving it) | "
        + " | ".join(f"{system} gives it" for system in config.systems)
        + " |",
        "|---|---|---|" + "---|" * len(config.systems),
    ]
    for task, found in rows:
        shares = [
            found.share_answered(results[(system, task)]["scores"]) if (system, task) in results else None
            for system in config.systems
        ]
        cells = " | ".join("-" if share is None else f"{share:.0%}" for share in shares)
        lines.append(f"| {task} | {found.name} | {found.share:.3f} | {cells} |")
    return lines


def _lean_reading(results: dict, answers: dict[str, MostCommonAnswer], families: dict) -> list[str]:
    """A caveat for each task where the trained stack seems to beat a system (p < 0.05 before Holm) while
    scoring no better than always giving the most common correct option.

    ``families``: each comparison's paired tests per task, as the report's table has them.
    """
    lines = []
    for task, found in answers.items():
        stack = results.get(("stack-trained", task))
        if stack is None:
            continue
        mean, stderr = mean_and_stderr(list(stack["scores"].values()))
        beaten = [
            b
            for (_, b), tests in families.items()
            if task in tests and tests[task][0].difference > 0 and tests[task][0].p_value < 0.05
        ]
        if not beaten or mean > found.share + stderr:
            continue
        leaning = found.share_answered(stack["scores"])
        lean = f", and it gives that option on {leaning:.0%} of them" if leaning is not None else ""
        lines.append(
            f"On {task} the trained stack's {mean:.3f} is no better than always giving the most common correct "
            f"answer ({found.name}, right on {found.share:.3f} of the documents){lean}: its lead over "
            f"{', '.join(beaten)} there is a lean towards that answer, not evidence that it reads the documents "
            "better."
        )
    return lines


def _costs(config: ExperimentConfig, output: Path, results: dict, state: dict) -> list[str]:
    steps = state.get("steps", {})
    train = {
        "stack-trained": steps.get("train-stack", {}),
        "single-lora": steps.get("train-baseline", {}),
    }
    params = {
        "stack-trained": adapter_parameters(trained_folder(STACK_DIR, config, output)),
        "single-lora": adapter_parameters(trained_folder(BASELINE_DIR, config, output)),
    }
    rows = [
        "| system | trainable parameters | distillation | training | evaluation wall time | "
        "tokens generated per document before the answer |",
        "|---|---|---|---|---|---|",
    ]
    for system in config.systems:
        evaluated = [results[(system, task)] for task in config.evaluation.tasks if (system, task) in results]
        wall = sum(result["wall_time_s"] for result in evaluated)
        documents = sum(result["cost"].get("documents", 0) for result in evaluated)
        tokens = sum(result["cost"].get("upstream_completion_tokens", 0) for result in evaluated)
        training = train.get(system, {})
        seconds = sum(stage.get("seconds", 0) for stage in training.get("stages", {}).values())
        distill = state.get("distill_seconds") if system == "stack-trained" else None
        rows.append(
            f"| {system} | {params.get(system, 0):,} | {_duration(distill)} | "
            f"{_duration(seconds)} | {_duration(wall)} | "
            f"{tokens / documents if documents else 0:.1f} |"
        )
    return rows


def _progress(config: ExperimentConfig, results: dict, state: dict) -> list[str]:
    """A warning line while the experiment is unfinished: which steps and results are still missing."""
    missing_steps = [step for step in STEPS if step != "report" and step not in state.get("steps", {})]
    wanted = len(config.systems) * len(config.evaluation.tasks)
    if not missing_steps:
        return []
    return [
        f"**Unfinished run**: steps still to run: {', '.join(missing_steps)}; {len(results)} of {wanted} "
        "(system, task) results are in. The same command continues it; the figures below are the finished ones.",
        "",
    ]


def _data_files(config: ExperimentConfig, results: dict) -> str:
    """Each task's data file(s), as the evaluation recorded them."""
    files = {}
    for task in config.evaluation.tasks:
        for system in config.systems:
            recorded = (results.get((system, task)) or {}).get("data_files")
            if recorded:
                files[task] = ", ".join(f"`{path}`" for path in recorded)
                break
    return "; ".join(f"{task}: {where}" for task, where in files.items()) or "(recorded as each task is evaluated)"


def _demo(output: Path) -> list[str]:
    """The demo questions' traces, trained and untrained, as the stage-checks step recorded them."""
    from ..messages import Trace

    path = output / CHECKS_FILE
    if not path.is_file():
        return []
    demo = json.loads(path.read_text(encoding="utf-8")).get("demo", {})
    lines = []
    for label, traces in demo.items():
        lines += ["", f"The demo questions, {label} stack:", ""]
        for trace in traces:
            lines += ["```text", Trace.model_validate(trace).render(), "```", ""]
    return lines


def _trace_pages(config: ExperimentConfig, results: dict, folder: Path) -> list[str]:

    links = []
    for task in config.evaluation.tasks:
        result = results.get(("stack-trained", task))
        if not result or not result.get("sample_traces"):
            continue
        lines = [
            f"# Sample traces: the trained stack on {task}",
            "",
            *document_traces(result, "## Document {doc_id} (score {score})"),
        ]
        name = f"traces_{safe_file_name(task)}.md"
        atomic_write_text(folder / name, "\n".join(lines))
        links.append(f"[{task}]({folder.name}/{name})")
    return links


def write_report(config: ExperimentConfig, output: Path, state: dict, registry: Registry) -> Path:
    results = {
        (system, task): result
        for system in config.systems
        for task in config.evaluation.tasks
        if (result := read_result(output, system, task)) is not None
    }
    answers = _most_common_answers(config, results)
    steps = state.get("steps", {})
    filtered = steps.get("filter", {})
    distill = config.distill
    examples = f"the first {distill.limit} usable examples" if distill.limit else "every usable example"
    lines = [
        f"# Results: {config.name}",
        "",
        "Written by `fslm experiment` from the finished runs in its output folder; rerun it to rewrite this page.",
        "",
        *_progress(config, results, state),
        "## Set-up",
        "",
        f"- Student: `{config.student}`; decomposition `{config.decomposition}`; seed {config.seed}.",
        f"- Data: `{config.data.name}` (sha256 `{_sha256(config.data)[:16]}…`), "
        f"{examples}; teacher `{distill.teacher}` ({distill.teacher_prompt} prompt).",
        f"- Target filter: kept {filtered.get('kept', '-')} examples, dropped {filtered.get('dropped', '-')} "
        f"({', '.join(f'{stage}: ' + ', '.join(f'{n} {why}' for why, n in reasons.items()) for stage, reasons in filtered.get('reasons', {}).items()) or 'none'}).",  # noqa: E501
        *_filter_since_training(steps, config.filter_targets),
        f"- Training: stack {json.dumps(config.train)}; baseline {json.dumps(config.baseline)}.",
        "- Evaluation: lm-evaluation-harness through the `fslm` model, zero-shot, the same documents for every "
        f"system: every document of a slice up to {config.evaluation.documents} (generation tasks: "
        f"{config.evaluation.generation_documents}), else a seeded subset of that size.",
        f"- Benchmark data: {_data_files(config, results)}.",
        f"- Machine: {result_machines(results.values())}.",
        f"- Code: {commit_line(results.values())}",
        "",
        "Systems: " + "; ".join(f"**{system}**: {DESCRIPTIONS[system]}" for system in config.systems) + ".",
        "",
        "## Accuracy (mean ± stderr over documents)",
        "",
        "| task | metric | documents | " + " | ".join(config.systems) + " | always the most common answer |",
        "|---|---|---|" + "---|" * (len(config.systems) + 1),
    ]
    for task in config.evaluation.tasks:
        first = next((results[(s, task)] for s in config.systems if (s, task) in results), None)
        if first is None:
            continue
        cells = " | ".join(_cell(results.get((system, task))) for system in config.systems)
        common = f"{answers[task].share:.3f}" if task in answers else "-"
        lines.append(f"| {task} | {first['metric']} | {len(first['doc_ids'])} | {cells} | {common} |")
    if any(upstream_per_option(result) for result in results.values()):
        lines += [
            "",
            "† The stack's upstream stages ran once per option of each document (a partial-scoring task, "
            "evaluated before fslm ran them once per document), so each option was scored after different "
            "notes: not comparable with the other systems, and left out of the paired tests and pools.",
        ]
    lines += ["", "## Paired differences (same documents)", ""]
    lines += [
        "Difference of means, its 95% interval from a paired bootstrap, and a two-sided p-value "
        "(McNemar's exact test for 0/1 scores, the paired bootstrap for TruthfulQA's mc2 and for pools that "
        "hold it). With one test per task, each comparison's p-values are also adjusted over its tasks by "
        "Holm's method; the reading uses the adjusted ones. The last rows pool every document of the tasks "
        "both systems have comparably (and, where a lead is a lean towards a task's most common answer, every "
        "document but that task's); the pooled rows are adjusted in the same family as the tasks.",
        "",
        "| task | comparison | difference | 95% interval | p | p, Holm | reading |",
        "|---|---|---|---|---|---|---|",
    ]
    families = {(a, b): family(config, results, a, b, answers) for a, b in COMPARISONS}
    for task in config.evaluation.tasks:
        for a, b in COMPARISONS:
            if task in not_comparable(config, results, a, b):
                lines.append(f"| {task} | {a} − {b} | - | - | - | - | not comparable (†) |")
            if task not in families[(a, b)]:
                continue
            comparison, adjusted = families[(a, b)][task]
            reading = "inside the noise" if adjusted >= 0.05 else ("better" if comparison.difference > 0 else "worse")
            lines.append(
                f"| {task} | {a} − {b} | {comparison.difference:+.3f} | "
                f"[{comparison.ci_low:+.3f}, {comparison.ci_high:+.3f}] | {comparison.p_value:.3g} | "
                f"{adjusted:.3g} | {reading} |"
            )
    for a, b in COMPARISONS:
        for row, (pooled, adjusted) in families[(a, b)].items():
            if not row.startswith(POOLED):
                continue
            reading = "inside the noise" if adjusted >= 0.05 else ("better" if pooled.difference > 0 else "worse")
            lines.append(
                f"| {row} | {a} − {b} | {pooled.difference:+.3f} | [{pooled.ci_low:+.3f}, {pooled.ci_high:+.3f}] | "
                f"{pooled.p_value:.3g} | {adjusted:.3g} | {reading} |"
            )
    lines += ["", "## Reading"]
    for paragraph in _reading(config, results, families) + _lean_reading(results, answers, families):
        lines += ["", paragraph]
    lines += _lean(config, results, answers)
    lines += ["", "## Cost", ""] + _costs(config, output, results, state)
    lines += [
        "",
        "Wall times are the machine's at the time (each result records its machine) and compare only within "
        "one machine; the tokens generated per document do not depend on it.",
    ]
    lines += ["", "## Do the stages do their roles?", ""] + stage_table(output, state) + _demo(output)
    lines += ablation_tables(output)
    report = config.report
    trace_folder = report.parent / f"{report.stem}_traces"
    links = _trace_pages(config, results, trace_folder)
    if links:
        lines += ["", "## Sample traces", "", "The trained stack, a few documents per task: " + ", ".join(links) + "."]
    command = state.get("command") or "fslm experiment CONFIG.yaml"
    lines += ["", "## Reproduce", "", "```sh", command, "```", ""]
    atomic_write_text(report, "\n".join(lines))
    return report
