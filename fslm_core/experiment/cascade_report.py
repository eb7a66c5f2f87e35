"""The cascade part of a comparison's report: where deferring pays, at what cost, and the whole curve.

For a cascade system declared with the system it answers with first (its
front) and the one it defers to (its fallback), each also evaluated alone on
the same documents, the report gives per task and pooled: the three scores,
the share of documents deferred, time per document, and the cascade's share
of the fallback's accuracy and time. It checks the cascade's recorded paths
against the two lone systems (a deferred document must score as the fallback
did, a kept one as the front did), and draws the accuracy-against-deferral
curve of every signal on these documents, with the cascade's calibrated
threshold marked on it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..files import atomic_write_text
from ..runtime.cascade import below_threshold
from ..stage_settings import GENERATION_SIGNALS, SCORING_SIGNALS
from .calibration import Calibration, Costs, CurvePoint, Document, choose, failing_form, signal_curves
from .calibration_report import curve_svg, signal_table
from .comparison_config import ComparisonConfig
from .comparisons import compare
from .provenance import UNRECORDED, result_machine


def cascade_sections(config: ComparisonConfig, results: dict, report: Path) -> list[str]:
    lines: list[str] = []
    for cascade, (front, fallback) in config.cascades.items():
        tasks = [
            task
            for task in config.evaluation.tasks
            if all((system, task) in results for system in (cascade, front, fallback))
        ]
        if tasks:
            lines += _cascade_section(config, cascade, front, fallback, tasks, results, report)
    return lines


def _documents(results: dict, front: str, fallback: str, task: str, forced: set[str] = frozenset()) -> list[Document]:
    mine, theirs = results[(front, task)], results[(fallback, task)]
    return [
        Document(
            task,
            doc,
            mine.get("confidence", {}).get(doc, {}),
            float(score),
            float(theirs["scores"][doc]),
            doc in forced,
        )
        for doc, score in mine["scores"].items()
    ]


def _failing_form(results: dict, cascade: str, task: str, deferral) -> set[str]:
    """The documents whose stack answer the cascade's answer form defers (its own result records them)."""
    if deferral is None or deferral.answer_form is None:
        return set()
    return failing_form(results[(cascade, task)], deferral.answer_form, f"report: {cascade} on {task}")


def _seconds(result: dict) -> float:
    return result["wall_time_s"] / len(result["scores"])


def _share(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole``; a dash when ``whole`` is 0 (a fallback that scored nothing)."""
    return f"{part / whole:.0%}" if whole else "-"


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _cascade_section(config, cascade, front, fallback, tasks, results, report: Path) -> list[str]:
    lines = [
        f"## Cascade: {cascade}",
        "",
        f"**{cascade}** answers with **{front}** and defers to **{fallback}**; both were also evaluated alone on "
        "the same documents. Time is wall time per document, models loaded beforehand; the cascade's includes "
        f"running {front} on every document. 'Paths check' counts documents whose cascade score is not the score "
        "of the system its recorded path names (0 expected).",
        "",
        f"| task | {front} | {fallback} | {cascade} | share of {fallback}'s accuracy | deferred | s / doc {front} | "
        f"s / doc {fallback} | s / doc {cascade} | share of {fallback}'s time | paths check |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    pooled: dict[str, list] = {"front": [], "fallback": [], "cascade": [], "deferred": [], "seconds": []}
    for task in tasks:
        mine, theirs, both = results[(front, task)], results[(fallback, task)], results[(cascade, task)]
        if not mine["doc_ids"] == theirs["doc_ids"] == both["doc_ids"]:
            raise InputError(
                f"cascades.{cascade}: {cascade}, {front} and {fallback} were evaluated on different documents of "
                f"{task}; evaluate them on the same ones"
            )
        paths = both.get("paths", {})
        wrong = sum(
            float(score) != float((theirs if paths.get(doc) == "fallback" else mine)["scores"][doc])
            for doc, score in both["scores"].items()
        )
        deferred = sum(path == "fallback" for path in paths.values())
        scores = {name: list(result["scores"].values()) for name, result in (("f", mine), ("b", theirs), ("c", both))}
        lines.append(
            f"| {task} | {_mean(scores['f']):.3f} | {_mean(scores['b']):.3f} | {_mean(scores['c']):.3f} | "
            f"{_share(_mean(scores['c']), _mean(scores['b']))} | {deferred / len(both['scores']):.0%} | "
            f"{_seconds(mine):.2f} | {_seconds(theirs):.2f} | {_seconds(both):.2f} | "
            f"{_share(_seconds(both), _seconds(theirs))} | {wrong} |"
        )
        pooled["front"] += scores["f"]
        pooled["fallback"] += scores["b"]
        pooled["cascade"] += scores["c"]
        pooled["deferred"].append(deferred)
        pooled["seconds"].append((mine["wall_time_s"], theirs["wall_time_s"], both["wall_time_s"]))
    documents = len(pooled["cascade"])
    seconds = [sum(column) / documents for column in zip(*pooled["seconds"])]
    accuracy = {name: _mean(pooled[name]) for name in ("front", "fallback", "cascade")}
    lines += [
        f"| **all {documents}** | {accuracy['front']:.3f} | {accuracy['fallback']:.3f} | "
        f"**{accuracy['cascade']:.3f}** | **{_share(accuracy['cascade'], accuracy['fallback'])}** | "
        f"{sum(pooled['deferred']) / documents:.0%} | {seconds[0]:.2f} | {seconds[1]:.2f} | {seconds[2]:.2f} | "
        f"**{_share(seconds[2], seconds[1])}** | |",
        "",
    ]
    machines = {
        name: sorted({result_machine(results[(name, task)]) or UNRECORDED for task in tasks})
        for name in (front, fallback, cascade)
    }
    if len({machine for names in machines.values() for machine in names}) > 1:
        lines += [
            "**The times come from different machines** ("
            + "; ".join(f"{name}: {' / '.join(names)}" for name, names in machines.items())
            + "): the time columns, and the time row under the curve, set them side by side as if they were one; "
            "only times from one machine compare.",
            "",
        ]
    test = compare(pooled["cascade"], pooled["fallback"])
    lines += [
        f"Pooled over the {documents} documents, {cascade} against {fallback}: {test.difference:+.3f} "
        f"[{test.ci_low:+.3f}, {test.ci_high:+.3f}], {test.test} p {test.p_value:.4f} ({test.a_only} documents "
        f"only {cascade} gets right, {test.b_only} only {fallback}). Pooling mixes tasks of different sizes and "
        "difficulty: read it beside the per-task rows and their tests above.",
        "",
    ]
    lines += _curve(config, cascade, front, fallback, tasks, results, report, seconds)
    return lines


def _threshold(config: ComparisonConfig, cascade: str, generated: bool):
    """The cascade's deferral for generated answers or for scored choices, as its stack declares it."""
    from ..runtime.stack_choice import resolve_stack

    stack = resolve_stack(config.systems[cascade].stack)
    if stack.fallback is None:
        return None
    return stack.fallback.generation if generated else stack.fallback.scoring


def _curve(config, cascade, front, fallback, tasks, results, report: Path, seconds: list[float]) -> list[str]:
    output_types = {results[(front, task)].get("output_type") for task in tasks}
    if len(output_types) > 1:  # the two kinds of answer have different signals: one curve cannot hold both
        return ["(No curve: these tasks mix generated and multiple-choice answers.)", ""]
    generated = output_types == {"generate_until"}
    deferral = _threshold(config, cascade, generated)
    if deferral is None:
        return []
    if deferral.signal is None:
        return [
            f"(No curve: {cascade} defers by the answer's form alone, `{deferral.answer_form}`, not by a threshold.)",
            "",
        ]
    documents = [
        doc
        for task in tasks
        for doc in _documents(results, front, fallback, task, _failing_form(results, cascade, task, deferral))
    ]
    curves = signal_curves(documents, GENERATION_SIGNALS if generated else SCORING_SIGNALS)
    if not curves:
        return []
    fallback_accuracy = _mean(doc.fallback for doc in documents)
    costs = Costs(seconds[0], seconds[1])
    deferred = [doc.forced or below_threshold(doc.signals.get(deferral.signal), deferral) for doc in documents]
    accuracy = _mean(doc.fallback if moved else doc.front for doc, moved in zip(documents, deferred))
    chosen = CurvePoint(deferral.below, sum(deferred), accuracy)
    calibrated = chosen.deferred
    signal, best, target = choose(curves, len(documents), fallback_accuracy, share=0.95)
    picture = report.with_name(f"{report.stem}_{cascade}.svg")
    title = f"{cascade}: accuracy against documents deferred ({len(documents)} documents)"
    calibration = Calibration(
        documents, curves, costs, deferral.signal, chosen, "the cascade's threshold", deferral.answer_form
    )
    atomic_write_text(picture, curve_svg(calibration, title))
    lines = [
        f"![{title}]({picture.name})",
        "",
        f"Every threshold on these documents, from the lone systems' scores (the circle: the cascade's own "
        f"threshold, `{deferral.signal}` below {deferral.below:.6g}"
        f"{f' or an answer not a {deferral.answer_form}' if deferral.answer_form else ''}, deferring {calibrated} "
        f"of {len(documents)} "
        "here; its stack file says how it was chosen). Grey numbers under the axis: time per document as a share of "
        f"{fallback}'s.",
        "",
        *signal_table(calibration, fallback),
        "",
        f"Chosen after seeing these documents (an upper bound, not a result): {target} is `{signal}` deferring "
        f"{best.deferred} ({best.rate(len(documents)):.0%}) for {best.accuracy:.3f}, at "
        f"{costs.share_of_fallback(best.rate(len(documents))):.0%} of {fallback}'s time.",
        "",
    ]
    return lines
