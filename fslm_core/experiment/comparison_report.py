"""The report of a comparison: per task, every system's score with its stderr and cost; paired tests; traces.

Read back from the comparison's folder only, so it can be rewritten at any
time from the results that have finished. Results made by different code
(their recorded commits differ) are marked as such, never silently mixed.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

from ..files import atomic_write_text
from ..messages import Trace
from .cascade_report import cascade_sections
from .comparison_config import ComparisonConfig
from .comparisons import compare, holm, mean_and_stderr
from .eval_runs import read_result, upstream_per_option
from .provenance import commit_line, result_machines
from .report_sections import document_traces

DEMO_FILE = "demo.jsonl"


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def write_comparison_report(config: ComparisonConfig, output: Path, command: str | None = None) -> Path:
    results = {
        (system, task): result
        for task in config.evaluation.tasks
        for system in config.systems
        if (result := read_result(output, system, task)) is not None
    }
    lines = [
        f"# {config.name}",
        "",
        *([config.description, ""] if config.description else []),
        f"Written {time.strftime('%Y-%m-%d')} by `{command or 'fslm experiment'}` from the result files in "
        f"`{output.name}/eval/` ({len(results)} of {len(config.systems) * len(config.evaluation.tasks)} done); "
        f"machine: {result_machines(results.values())}.",
        "",
        commit_line(results.values()),
        "",
        "Systems:",
        "",
    ]
    for name, declaration in config.systems.items():
        what = f"stack `{_stack_label(declaration.stack)}`" if declaration.stack else f"`{declaration.model}` alone"
        lines.append(f"- **{name}**: {what}{f': {declaration.description}' if declaration.description else ''}")
    lines.append("")
    path = config.report or output / "report.md"
    if config.notes is not None:
        lines += [notes_for(config.notes, path.parent), ""]
    for task in config.evaluation.tasks:
        lines += _task_section(config, task, results)
    lines += cascade_sections(config, results, path)
    lines += _demo_section(output)
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


_LINK_TARGET = re.compile(r"(\]\()([^)\s]+)(\))")


def notes_for(notes: Path, folder: Path) -> str:
    """The notes file's text for a report in ``folder``: its relative links, written from where the notes
    file is (so they work where it is opened), rewritten to point from the report to the same files."""

    def moved(match: re.Match) -> str:
        target = match.group(2)
        if "://" in target or target.startswith(("#", "/", "mailto:")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        relative = Path(os.path.relpath(notes.parent.resolve() / path, folder.resolve())).as_posix()
        return f"{match.group(1)}{relative}{'#' + anchor if anchor else ''}{match.group(3)}"

    return _LINK_TARGET.sub(moved, notes.read_text(encoding="utf-8").strip())


def _stack_label(stack: str) -> str:
    """A registered name as it is; a file or folder by its last two parts (``package/stack``, not ``stack``)."""
    path = Path(stack)
    return "/".join(path.parts[-2:]) if path.is_absolute() else stack


def _task_section(config: ComparisonConfig, task: str, results: dict) -> list[str]:
    done = {system: results[(system, task)] for system in config.systems if (system, task) in results}
    if not done:
        return [f"## {task}", "", "No results yet.", ""]
    first = next(iter(done.values()))
    commits = {result.get("provenance", {}).get("commit") for result in done.values()}
    lines = [
        f"## {task}",
        "",
        f"{len(first['doc_ids'])} documents (ids {first['doc_ids'][0]} to {first['doc_ids'][-1]} of "
        f"{first['documents_in_slice']}), {config.evaluation.num_fewshot}-shot, metric `{first['metric']}`, the "
        "same documents for every system.",
        "",
        "| system | score | stderr | tokens / question | tool s / question | wall s | s / question |"
        + (" commit |" if len(commits) > 1 else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if len(commits) > 1 else ""),
    ]
    for system, result in done.items():
        scores = list(result["scores"].values())
        mean, stderr = mean_and_stderr(scores)
        cost = result.get("cost", {})
        documents = len(scores)
        row = (
            f"| {system} | {mean:.3f} | {_number(stderr)} | {_number(cost.get('tokens_per_document'), 1)} | "
            f"{_number(cost.get('tool_seconds_per_document'), 3)} | {result['wall_time_s']:.0f} | "
            f"{result['wall_time_s'] / documents:.2f} |"
        )
        if len(commits) > 1:
            row += f" `{str(result.get('provenance', {}).get('commit'))[:12]}` |"
        lines.append(row)
    lines += ["", *_paired(config, task, done)]
    lines += _sample_traces(next(iter(done)), done[next(iter(done))])
    return lines


def _paired(config: ComparisonConfig, task: str, done: dict) -> list[str]:
    pairs = [(a, b) for a, b in config.pairs if a in done and b in done]
    apart = [(a, b) for a, b in pairs if upstream_per_option(done[a]) or upstream_per_option(done[b])]
    pairs = [pair for pair in pairs if pair not in apart]
    notes = [
        f"Not compared: {a} vs {b}: a stack's upstream stages ran once per option of each document, so its "
        "options were scored after different notes."
        for a, b in apart
    ]
    if not pairs:
        return [*notes, ""] if notes else []
    tests = []
    for a, b in pairs:
        ids = [doc for doc in done[a]["scores"] if doc in done[b]["scores"]]
        tests.append(compare([done[a]["scores"][d] for d in ids], [done[b]["scores"][d] for d in ids]))
    adjusted = holm([test.p_value for test in tests])
    lines = [
        "| a vs b | difference | 95% interval | test | p | Holm p | only a right | only b right |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (a, b), test, holm_p in zip(pairs, tests, adjusted):
        lines.append(
            f"| {a} vs {b} | {test.difference:+.3f} | [{test.ci_low:+.3f}, {test.ci_high:+.3f}] | {test.test} | "
            f"{_p(test.p_value)} | {_p(holm_p)} | {test.a_only if test.a_only is not None else '-'} | "
            f"{test.b_only if test.b_only is not None else '-'} |"
        )
    lines += [
        "",
        "Holm's adjustment is over the comparisons of this task. A difference whose interval holds 0 is inside "
        "the noise.",
        "",
        *[line for note in notes for line in (note, "")],
    ]
    return lines


def _sample_traces(system: str, result: dict) -> list[str]:
    if not result.get("sample_traces"):
        return []
    return [
        f"Sample traces of **{system}** (the first documents):",
        "",
        *document_traces(result, "Document {doc_id}, score {score}:"),
    ]


def _demo_section(output: Path) -> list[str]:
    path = output / DEMO_FILE
    if not path.is_file():
        return []
    lines = ["## Demo prompts", ""]
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            lines += ["```text", Trace.model_validate_json(line).render(), "```", ""]
    return lines
