"""``fslm calibrate``: how a cascade's accuracy and cost move with its deferral threshold, and the threshold to use.

On development documents, the stack (without its fallback) and the fallback
are each evaluated once (:mod:`.eval_runs`, resumable, every document's score
and confidence signals kept). Deferring the documents whose signal is below a
threshold then gives the cascade's score on every document exactly, for every
threshold, without running it again: the accuracy-against-deferral curve of
each signal. The operating point is the fewest deferrals that reach a target
(a share of the fallback's accuracy), or the best accuracy at a deferral rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..answer_forms import has_answer_form
from ..declarations import Stack
from ..errors import InputError
from ..stage_settings import GENERATION_SIGNALS, SCORING_SIGNALS, Deferral
from .eval_runs import EvalPlan, Evaluator, read_result

FRONT, FALLBACK = "stack", "fallback"
"""The two systems a calibration evaluates: the stack answering alone, and its fallback answering alone."""


@dataclass(frozen=True)
class Document:
    """One development document: the stack's confidence signals, and each system's score on it."""

    task: str
    doc_id: str
    signals: dict[str, float | None]
    front: float
    fallback: float
    forced: bool = False
    """Deferred whatever its signals: the stack's answer is not of the form the deferral asks for."""


@dataclass(frozen=True)
class CurvePoint:
    """The cascade at one threshold: how many documents it defers and its mean score."""

    below: float
    deferred: int
    accuracy: float

    def rate(self, documents: int) -> float:
        return self.deferred / documents


@dataclass(frozen=True)
class Costs:
    """Seconds per document of the stack alone and of the fallback alone, measured in the same run."""

    front_seconds: float
    fallback_seconds: float

    def cascade_seconds(self, rate: float) -> float:
        """Every document runs the stack; the deferred ones run the fallback as well."""
        return self.front_seconds + rate * self.fallback_seconds

    def share_of_fallback(self, rate: float) -> float:
        return self.cascade_seconds(rate) / self.fallback_seconds


@dataclass(frozen=True)
class Calibration:
    documents: list[Document]
    curves: dict[str, list[CurvePoint]]
    costs: Costs
    chosen_signal: str
    chosen: CurvePoint
    target: str
    answer_form: str | None = None

    @property
    def front_accuracy(self) -> float:
        return _mean([doc.front for doc in self.documents])

    @property
    def fallback_accuracy(self) -> float:
        return _mean([doc.fallback for doc in self.documents])

    @property
    def deferral(self) -> Deferral:
        return Deferral(signal=self.chosen_signal, below=round(self.chosen.below, 6), answer_form=self.answer_form)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def signal_curve(documents: Sequence[Document], signal: str) -> list[CurvePoint]:
    """The cascade's score at every threshold that defers a different set of documents, fewest deferred first.

    A document defers when its signal is below the threshold (an unknown signal, or an answer not of the
    deferral's form, always does). Thresholds
    sit halfway between neighbouring signal values, so a new document just inside either is placed as
    the development documents were.
    """

    def always(doc: Document) -> bool:
        return doc.forced or doc.signals.get(signal) is None

    known = sorted((doc for doc in documents if not always(doc)), key=lambda d: d.signals[signal])
    unknown = [doc for doc in documents if always(doc)]
    total = len(documents)
    score = sum(doc.front for doc in known) + sum(doc.fallback for doc in unknown)
    values = [doc.signals[signal] for doc in known]
    points = [CurvePoint(below=values[0] if values else 0.0, deferred=len(unknown), accuracy=score / total)]
    for index, doc in enumerate(known):
        score += doc.fallback - doc.front
        following = values[index + 1] if index + 1 < len(values) else math.inf
        if following == values[index]:
            continue  # equal signals defer together
        below = (values[index] + following) / 2 if following != math.inf else math.inf
        points.append(CurvePoint(below=below, deferred=len(unknown) + index + 1, accuracy=score / total))
    return points


def signal_curves(documents: Sequence[Document], signals: Sequence[str]) -> dict[str, list[CurvePoint]]:
    """:func:`signal_curve` of each signal that some document has (agreement only comes from a sampling stack)."""
    return {
        signal: signal_curve(documents, signal)
        for signal in signals
        if any(doc.signals.get(signal) is not None for doc in documents)
    }


def choose(
    curves: dict[str, list[CurvePoint]],
    documents: int,
    fallback_accuracy: float,
    share: float | None = None,
    rate: float | None = None,
) -> tuple[str, CurvePoint, str]:
    """The operating point: the fewest deferrals reaching ``share`` of the fallback's accuracy (ties: higher
    accuracy), or the best accuracy deferring at most ``rate`` of the documents. Returns the signal, its
    point and the target in words."""
    if (share is None) == (rate is None):
        raise InputError("give one target: a share of the fallback's accuracy, or a deferral rate")
    if share is not None:
        goal = share * fallback_accuracy
        target = f"at least {share:.0%} of the fallback's accuracy ({goal:.3f}) with the fewest deferrals"
        reaching = [
            (point.deferred, -point.accuracy, signal, point)
            for signal, points in curves.items()
            for point in points
            if point.accuracy >= goal - 1e-12
        ]
        if not reaching:
            raise InputError(f"calibration: no threshold reaches {target} (the fallback's own accuracy is the most)")
        _, _, signal, point = min(reaching, key=lambda item: item[:2])
        return signal, point, target
    target = f"the best accuracy deferring at most {rate:.0%} of the documents"
    within = [
        (-point.accuracy, point.deferred, signal, point)
        for signal, points in curves.items()
        for point in points
        if point.deferred <= rate * documents + 1e-9
    ]
    if not within:
        fewest = min((point.deferred for points in curves.values() for point in points), default=documents)
        raise InputError(
            f"--rate: every threshold defers more than {rate:.0%} of the {documents} documents (the fewest is "
            f"{fewest}: documents without a signal, or whose answer is not of the answer form, always defer)"
        )
    _, _, signal, point = min(within, key=lambda item: item[:2])
    return signal, point, target


def calibration_plan(
    stack: Stack,
    fallback: Stack,
    tasks: Sequence[str],
    document_ranges: dict[str, tuple[int, int]],
    batch_size: int,
    dtype: str | None,
    seed: int = 0,
) -> EvalPlan:
    return EvalPlan(
        systems={FRONT: lambda: stack, FALLBACK: lambda: fallback},
        tasks=tuple(tasks),
        seed=seed,
        document_ranges=dict(document_ranges),
        batch_size=batch_size,
        dtype=dtype,
        traces_per_task=0,
    )


def read_documents(
    output: Path, tasks: Sequence[str], answer_form: str | None = None
) -> tuple[list[Document], Costs, set[str]]:
    """The development documents of every task, the two systems' costs, and the tasks' output types; with an
    ``answer_form``, documents whose answer is not of it are marked as always deferred."""
    documents: list[Document] = []
    seconds = {FRONT: 0.0, FALLBACK: 0.0}
    output_types = set()
    for task in tasks:
        front, fallback = read_result(output, FRONT, task), read_result(output, FALLBACK, task)
        if front is None or fallback is None:
            raise InputError(f"calibration: task {task}: the evaluation has not finished (run it again to resume)")
        if front["doc_ids"] != fallback["doc_ids"]:
            raise InputError(
                f"calibration: task {task}: the stack's and the fallback's results cover different documents "
                f"({output}); evaluate both on the same ones"
            )
        output_types.add(front["output_type"])
        form = answer_form if front["output_type"] == "generate_until" else None  # a choice is always one
        forced = failing_form(front, form, f"calibration: task {task} ({output})")
        for doc_id, score in front["scores"].items():
            signals = front.get("confidence", {}).get(doc_id, {})
            documents.append(
                Document(task, doc_id, signals, float(score), float(fallback["scores"][doc_id]), doc_id in forced)
            )
        seconds[FRONT] += front["wall_time_s"]
        seconds[FALLBACK] += fallback["wall_time_s"]
    count = max(len(documents), 1)
    return documents, Costs(seconds[FRONT] / count, seconds[FALLBACK] / count), output_types


def failing_form(result: dict, answer_form: str | None, where: str) -> set[str]:
    """The documents of an eval result whose recorded answer is not of ``answer_form`` (none without one)."""
    if answer_form is None:
        return set()
    answers = result.get("answers")
    if not answers:
        raise InputError(
            f"{where}: the result records no answers (it predates answer forms, or its answers are scored "
            "choices): evaluate it again to check answers against answer_form"
        )
    return {doc_id for doc_id in result["scores"] if not has_answer_form(answers.get(doc_id), answer_form)}


def calibrate(
    stack: Stack,
    fallback: Stack,
    tasks: Sequence[str],
    document_ranges: dict[str, tuple[int, int]],
    output: Path,
    *,
    share: float | None = None,
    rate: float | None = None,
    batch_size: int = 16,
    dtype: str | None = None,
    answer_form: str | None = None,
    echo: Callable[[str], None] = print,
) -> Calibration:
    """Evaluate (or resume) both systems on the documents, draw every signal's curve and pick the point
    (with an ``answer_form``, answers not of it are deferred at every threshold)."""
    plan = calibration_plan(stack, fallback, tasks, document_ranges, batch_size, dtype)
    Evaluator(plan, output, echo).run()
    documents, costs, output_types = read_documents(output, tasks, answer_form)
    if len(output_types) > 1:
        raise InputError("calibration: tasks mix generated and multiple-choice answers; calibrate them apart")
    signals = GENERATION_SIGNALS if output_types == {"generate_until"} else SCORING_SIGNALS
    curves = signal_curves(documents, signals)
    if not curves:
        raise InputError(f"calibration: no document has a confidence signal ({', '.join(signals)})")
    fallback_accuracy = _mean([doc.fallback for doc in documents])
    signal, point, target = choose(curves, len(documents), fallback_accuracy, share, rate)
    form = answer_form if signals is GENERATION_SIGNALS else None
    return Calibration(documents, curves, costs, signal, point, target, form)
