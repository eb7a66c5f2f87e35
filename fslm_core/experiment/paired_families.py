"""The paper report's paired tests: one system against another on each task and on pools of tasks.

A family is every comparable task of a pair of systems, the pool of their documents and, where a lead on a
task is only a lean towards its most common answer, the pool without those tasks; Holm's adjustment runs
over the whole family, pooled rows included. A stack whose upstream stages ran once per option of a
partial-scoring task is not comparable there (:func:`~.eval_runs.upstream_per_option`).
"""

from __future__ import annotations

from .answer_bias import MostCommonAnswer
from .comparisons import compare, holm, mean_and_stderr
from .config import ExperimentConfig
from .eval_runs import upstream_per_option


def pair_test(a: dict | None, b: dict | None):
    if a is None or b is None:
        return None
    ids = sorted(set(a["scores"]) & set(b["scores"]), key=int)
    return compare([a["scores"][i] for i in ids], [b["scores"][i] for i in ids])


POOLED = "all tasks"
"""How a family's pooled rows start: ``all tasks (N documents)``, ``all tasks but X (N documents)``."""


def comparable(results: dict, a: str, b: str, task: str) -> bool:
    """Both systems have the task, and neither scored its options after different upstream notes."""
    found = [results.get((system, task)) for system in (a, b)]
    return all(result is not None and not upstream_per_option(result) for result in found)


def not_comparable(config: ExperimentConfig, results: dict, a: str, b: str) -> list[str]:
    return [
        task
        for task in config.evaluation.tasks
        if (a, task) in results and (b, task) in results and not comparable(results, a, b, task)
    ]


def leans(results: dict, answers: dict[str, MostCommonAnswer], system: str, tests: dict) -> list[str]:
    """Tasks where ``system`` seems to win (p < 0.05 before adjustment) while scoring no better than always
    giving the most common correct option: a lean towards that answer, not a reading of the documents."""
    leaning = []
    for task, comparison in tests.items():
        found, result = answers.get(task), results.get((system, task))
        if found is None or result is None or comparison.difference <= 0 or comparison.p_value >= 0.05:
            continue
        mean, stderr = mean_and_stderr(list(result["scores"].values()))
        if mean <= found.share + stderr:
            leaning.append(task)
    return leaning


def family(
    config: ExperimentConfig, results: dict, a: str, b: str, answers: dict[str, MostCommonAnswer] | None = None
) -> dict:
    """System a against b: row -> (comparison, Holm-adjusted p). Rows: every task both have comparably, the
    pool of those tasks' documents and, where a lead on some task is a lean towards its most common answer,
    the pool without those tasks. Holm's adjustment runs over all of these rows together, pooled ones too."""
    found = {
        task: comparison
        for task in config.evaluation.tasks
        if comparable(results, a, b, task)
        and (comparison := pair_test(results.get((a, task)), results.get((b, task)))) is not None
    }
    rows = dict(found)
    pooled = pooled_test(results, a, b, list(found))
    if pooled is not None:
        rows[f"{POOLED} ({pooled.documents} documents)"] = pooled
    leaning = leans(results, answers or {}, a, found)
    rest = [task for task in found if task not in leaning]
    if leaning and rest:
        without = pooled_test(results, a, b, rest)
        rows[f"{POOLED} but {', '.join(leaning)} ({without.documents} documents)"] = without
    adjusted = holm([comparison.p_value for comparison in rows.values()])
    return {row: (comparison, p) for (row, comparison), p in zip(rows.items(), adjusted)}


def pooled_test(results: dict, a: str, b: str, tasks: list[str]):
    """System a against b over the documents of ``tasks``, each document counted once."""
    first, second = [], []
    for task in tasks:
        x, y = results.get((a, task)), results.get((b, task))
        if x is None or y is None:
            continue
        for doc in sorted(set(x["scores"]) & set(y["scores"]), key=int):
            first.append(x["scores"][doc])
            second.append(y["scores"][doc])
    return compare(first, second) if first else None
