"""The side-by-side table of ``fslm eval``: each task's metrics for the stack and the baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class RunResult:
    """One model's lm-eval results on one task, with its wall time."""

    results: dict | None
    wall_time_s: float
    cost: dict
    task_name: str | None = None  # the name lm-eval ran it under (a task YAML file's own name)


def metric_rows(task_results: dict | None) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """(task, metric) -> (value, stderr) from lm-eval's results, one row per metric and filter."""
    rows = {}
    for task, values in ((task_results or {}).get("results") or {}).items():
        for key, value in values.items():
            metric, sep, filter_name = key.partition(",")
            if not sep or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = values.get(f"{metric}_stderr,{filter_name}")
            label = metric if filter_name == "none" else f"{metric} ({filter_name})"
            rows[(task, label)] = (float(value), float(stderr) if isinstance(stderr, (int, float)) else None)
    return rows


def comparison_table(runs: dict[str, dict[str, RunResult]], with_baseline: bool) -> list[dict]:
    """Rows of task, metric, stack and baseline values with their stderr and wall times."""
    table = []
    for by_model in runs.values():
        stack_rows = metric_rows(by_model["stack"].results)
        baseline_rows = metric_rows(by_model["baseline"].results) if with_baseline else {}
        for (task_name, metric), (value, stderr) in stack_rows.items():
            baseline_value, baseline_stderr = baseline_rows.get((task_name, metric), (None, None))
            table.append(
                {
                    "task": task_name,
                    "metric": metric,
                    "stack": value,
                    "stack_stderr": stderr,
                    "baseline": baseline_value,
                    "baseline_stderr": baseline_stderr,
                    "stack_time_s": round(by_model["stack"].wall_time_s, 1),
                    "baseline_time_s": round(by_model["baseline"].wall_time_s, 1) if with_baseline else None,
                    "upstream_tokens_per_document": by_model["stack"].cost["upstream_tokens_per_document"],
                }
            )
    return table


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def render_table(rows: list[dict], with_baseline: bool) -> str:
    """The comparison as aligned text columns."""
    headers = ["task", "metric", "stack", "stderr"]
    if with_baseline:
        headers += ["baseline", "stderr"]
    headers += ["stack time"] + (["baseline time"] if with_baseline else []) + ["upstream tok/doc"]
    lines = []
    for row in rows:
        cells = [row["task"], row["metric"], _number(row["stack"]), _number(row["stack_stderr"])]
        if with_baseline:
            cells += [_number(row["baseline"]), _number(row["baseline_stderr"])]
        cells.append(f"{row['stack_time_s']:.1f} s")
        if with_baseline:
            cells.append(f"{row['baseline_time_s']:.1f} s")
        cells.append(f"{row['upstream_tokens_per_document']:.1f}")
        lines.append(cells)
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *lines)]
    render = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([render(headers), render(["-" * w for w in widths]), *map(render, lines)])
