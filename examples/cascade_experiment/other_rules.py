"""Would per-task thresholds or a learned rule over several signals defer better than one signal?

Fitted on the calibration documents (`calibration/eval/`), judged on the run's 1,000 documents
(`run/eval/single` and `run/eval/qwen`): a cascade's score on a document is the front model's when kept and
the fallback's when deferred, so every rule is judged on exactly what the cascade would score, without a
new evaluation. Prints a Markdown table; `notes.md` quotes it.

    python examples/cascade_experiment/other_rules.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fslm_core.experiment.calibration import Document, signal_curve
from fslm_core.stage_settings import SCORING_SIGNALS

HERE = Path(__file__).parent
TASKS = ("local_arc_easy", "local_arc_challenge", "local_mmlu", "local_hellaswag")
SHARE = 0.95  # of the fallback's accuracy, as the experiment's operating point
RATES = (0.15, 0.30, 0.45)


def documents(front: Path, fallback: Path) -> list[Document]:
    found = []
    for task in TASKS:
        small = json.loads((front / f"{task}.json").read_text())
        large = json.loads((fallback / f"{task}.json").read_text())
        for doc_id, score in small["scores"].items():
            found.append(Document(task, doc_id, small["confidence"][doc_id], score, large["scores"][doc_id]))
    return found


def features(docs: list[Document]) -> np.ndarray:
    signals = [[doc.signals[name] for name in SCORING_SIGNALS] for doc in docs]
    tasks = [[float(doc.task == task) for task in TASKS] for doc in docs]
    return np.hstack([np.array(signals), np.log(np.array(signals)[:, -1:]), np.array(tasks)])


def logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 3000, rate: float = 0.1):
    """A plain L2-regularised logistic regression (gradient descent on standardised features)."""
    mean, spread = x.mean(0), x.std(0) + 1e-9

    def design(rows: np.ndarray) -> np.ndarray:
        return np.c_[(rows - mean) / spread, np.ones(len(rows))]

    weights = np.zeros(x.shape[1] + 1)
    for _ in range(steps):
        predicted = 1 / (1 + np.exp(-design(x) @ weights))
        weights -= rate * (design(x).T @ (predicted - y) / len(y) + l2 * np.r_[weights[:-1], 0])
    return lambda rows: 1 / (1 + np.exp(-design(rows) @ weights))


def cascade(docs: list[Document], defer: np.ndarray) -> float:
    return float(np.mean([doc.fallback if d else doc.front for doc, d in zip(docs, defer)]))


def threshold_for_share(docs: list[Document], scores: np.ndarray) -> float:
    """The lowest score to keep so the cascade reaches SHARE of the fallback's accuracy on ``docs``."""
    goal = SHARE * np.mean([doc.fallback for doc in docs])
    order = np.argsort(scores)
    total = sum(doc.front for doc in docs)
    for index in order:
        if total / len(docs) >= goal:
            return float(scores[index])
        total += docs[index].fallback - docs[index].front
    return np.inf


def at_rates(docs: list[Document], scores: np.ndarray) -> list[float]:
    order = np.argsort(scores)
    return [cascade(docs, np.isin(np.arange(len(docs)), order[: round(rate * len(docs))])) for rate in RATES]


def per_task_thresholds(calibration: list[Document], signal: str) -> dict[str, float]:
    """Per task, the fewest deferrals reaching SHARE of that task's fallback accuracy (fslm calibrate's rule)."""
    chosen = {}
    for task in TASKS:
        docs = [doc for doc in calibration if doc.task == task]
        goal = SHARE * np.mean([doc.fallback for doc in docs])
        reaching = [point for point in signal_curve(docs, signal) if point.accuracy >= goal - 1e-12]
        chosen[task] = min(reaching, key=lambda point: (point.deferred, -point.accuracy)).below
    return chosen


def main() -> None:
    calibration = documents(HERE / "calibration/eval/stack", HERE / "calibration/eval/fallback")
    run = documents(HERE / "run/eval/single", HERE / "run/eval/qwen")
    x_cal, x_run = features(calibration), features(run)
    right_small = logistic(x_cal, np.array([doc.front for doc in calibration]))
    right_large = logistic(x_cal, np.array([doc.fallback for doc in calibration]))
    rules = {
        "choice_probability (one threshold, today's)": (x_cal[:, 2], x_run[:, 2]),
        "learned: P(small right), logistic over the three signals and the task": (
            right_small(x_cal),
            right_small(x_run),
        ),
        "learned: P(small right) − P(large right), same features": (
            right_small(x_cal) - right_large(x_cal),
            right_small(x_run) - right_large(x_run),
        ),
    }
    print(
        f"Run documents: small alone {np.mean([d.front for d in run]):.3f}, large alone "
        f"{np.mean([d.fallback for d in run]):.3f}.\n"
    )
    print(
        f"| rule | threshold for {SHARE:.0%} (from calibration): run accuracy, deferred | "
        + " | ".join(f"accuracy at {rate:.0%} deferred" for rate in RATES)
        + " |"
    )
    print("|---|---|" + "---|" * len(RATES))
    for name, (on_calibration, on_run) in rules.items():
        defer = on_run < threshold_for_share(calibration, on_calibration)
        row = f"{cascade(run, defer):.3f}, {defer.mean():.0%}"
        print(f"| {name} | {row} | " + " | ".join(f"{value:.3f}" for value in at_rates(run, on_run)) + " |")
    thresholds = per_task_thresholds(calibration, "choice_probability")
    defer = np.array([doc.signals["choice_probability"] < thresholds[doc.task] for doc in run])
    print(f"| choice_probability, one threshold per task | {cascade(run, defer):.3f}, {defer.mean():.0%} | - | - | - |")


if __name__ == "__main__":
    main()
