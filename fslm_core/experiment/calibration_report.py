"""A calibration as a person reads it: the accuracy-against-deferral curves as a picture, the operating point
and its cost in words and a short table, and the curves as JSON for whoever wants the numbers."""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path

from ..files import atomic_write_text
from .calibration import Calibration

CURVE_FILE, TABLE_FILE, POINTS_FILE = "calibration.svg", "calibration.md", "calibration.json"
RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
_WIDTH, _HEIGHT, _LEFT, _RIGHT, _TOP, _BOTTOM = 640, 400, 60, 20, 30, 60


def accuracy_at(calibration: Calibration, signal: str, rate: float) -> float | None:
    """The signal's accuracy at the threshold deferring the most documents, up to ``rate`` of them (None when
    even its lowest threshold defers more: documents without the signal always defer)."""
    limit = rate * len(calibration.documents) + 1e-9
    within = [point for point in calibration.curves[signal] if point.deferred <= limit]
    return within[-1].accuracy if within else None


def curve_svg(calibration: Calibration, title: str) -> str:
    """Accuracy (y) against the share of documents deferred (x), one line per signal, with the fallback's
    accuracy, the target and the chosen point marked. Written by hand: a few lines of SVG need no plot library."""
    documents = len(calibration.documents)
    values = [p.accuracy for points in calibration.curves.values() for p in points]
    values += [calibration.fallback_accuracy, calibration.front_accuracy]
    low, high = min(values), max(values)
    low, high = max(0.0, low - 0.02), min(1.0, high + 0.02)
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def x(rate: float) -> float:
        return _LEFT + rate * plot_w

    def y(accuracy: float) -> float:
        return _TOP + (high - accuracy) / (high - low or 1.0) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" font-family="sans-serif" '
        'font-size="12">',
        f'<text x="{_LEFT}" y="18" font-size="14">{escape(title)}</text>',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>',
    ]
    for rate in RATES:
        cost = calibration.costs.share_of_fallback(rate)
        parts.append(f'<text x="{x(rate):.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle">{rate:.0%}</text>')
        parts.append(
            f'<text x="{x(rate):.1f}" y="{_TOP + plot_h + 30}" text-anchor="middle" fill="#666">{cost:.0%}</text>'
        )
    parts.append(
        f'<text x="{_LEFT + plot_w / 2}" y="{_HEIGHT - 8}" text-anchor="middle">documents deferred '
        "(grey: time per document as a share of the fallback's)</text>"
    )
    for step in range(5):
        accuracy = low + (high - low) * step / 4
        parts.append(f'<text x="{_LEFT - 6}" y="{y(accuracy) + 4:.1f}" text-anchor="end">{accuracy:.3f}</text>')
    for accuracy, label, dash in (
        (calibration.fallback_accuracy, "fallback alone", "6,4"),
        (calibration.front_accuracy, "stack alone", "2,3"),
    ):
        parts.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(accuracy):.1f}" y2="{y(accuracy):.1f}" '
            f'stroke="#444" stroke-dasharray="{dash}"/>'
        )
        parts.append(f'<text x="{_LEFT + plot_w - 4}" y="{y(accuracy) - 4:.1f}" text-anchor="end">{label}</text>')
    for index, (signal, points) in enumerate(calibration.curves.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        line = " ".join(f"{x(p.rate(documents)):.1f},{y(p.accuracy):.1f}" for p in points)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        parts.append(f'<text x="{_LEFT + 8}" y="{_TOP + 16 + 14 * index}" fill="{colour}">{escape(signal)}</text>')
    chosen = calibration.chosen
    parts.append(
        f'<circle cx="{x(chosen.rate(documents)):.1f}" cy="{y(chosen.accuracy):.1f}" r="5" fill="none" '
        'stroke="black" stroke-width="2"/>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _or_form(calibration: Calibration) -> str:
    if calibration.answer_form is None:
        return ""
    forced = sum(doc.forced for doc in calibration.documents)
    return f" or its answer is not a {calibration.answer_form} ({forced} documents, deferred at every threshold)"


def calibration_markdown(calibration: Calibration, title: str) -> str:
    documents = len(calibration.documents)
    chosen, costs = calibration.chosen, calibration.costs
    rate = chosen.rate(documents)
    tasks = sorted({doc.task for doc in calibration.documents})
    lines = [
        f"# {title}",
        "",
        f"{documents} development documents ({', '.join(tasks)}). The stack alone scores "
        f"{calibration.front_accuracy:.3f} in {costs.front_seconds:.2f} s a document; the fallback alone "
        f"{calibration.fallback_accuracy:.3f} in {costs.fallback_seconds:.2f} s.",
        "",
        f"![accuracy against documents deferred]({CURVE_FILE})",
        "",
        f"Target: {calibration.target}. Chosen: defer when `{calibration.chosen_signal}` is below "
        f"{chosen.below:.6g}{_or_form(calibration)}: {chosen.deferred} documents deferred ({rate:.1%}), accuracy "
        f"{chosen.accuracy:.3f} "
        f"({_share_of_fallback(chosen.accuracy, calibration.fallback_accuracy)}), "
        f"{costs.cascade_seconds(rate):.2f} s a document ({costs.share_of_fallback(rate):.0%} of the fallback's "
        "time: the stack on every document, the fallback on the deferred ones).",
        "",
        "Accuracy per signal at each deferral rate (the threshold deferring the most documents up to that share):",
        "",
        *signal_table(calibration, "fallback"),
        "",
    ]
    return "\n".join(lines)


def signal_table(calibration: Calibration, fallback: str) -> list[str]:
    """Each signal's accuracy at the deferral rates of :data:`RATES`, and the cascade's time at each as a
    share of ``fallback``'s: a Markdown table."""
    lines = ["| signal | " + " | ".join(f"{r:.0%}" for r in RATES) + " |", "|---|" + "---:|" * len(RATES)]
    for signal in calibration.curves:
        cells = " | ".join(_cell(accuracy_at(calibration, signal, r)) for r in RATES)
        lines.append(f"| {signal} | {cells} |")
    costs = " | ".join(f"{calibration.costs.share_of_fallback(r):.0%}" for r in RATES)
    return [*lines, f"| *time / {fallback}'s* | {costs} |"]


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _point(point) -> dict:
    # The last point defers everything: its threshold is infinite, which JSON cannot hold.
    return {**point.__dict__, "below": point.below if math.isfinite(point.below) else None}


def write_calibration_report(calibration: Calibration, folder: Path, title: str) -> Path:
    """Write the picture, the Markdown page and the curves as JSON into ``folder``; returns the page."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / CURVE_FILE, curve_svg(calibration, title))
    points = {
        "documents": len(calibration.documents),
        "front_accuracy": calibration.front_accuracy,
        "fallback_accuracy": calibration.fallback_accuracy,
        "front_seconds": calibration.costs.front_seconds,
        "fallback_seconds": calibration.costs.fallback_seconds,
        "chosen": {"signal": calibration.chosen_signal, **_point(calibration.chosen)},
        "answer_form": calibration.answer_form,
        "deferred_by_answer_form": sum(doc.forced for doc in calibration.documents),
        "target": calibration.target,
        "curves": {signal: [_point(p) for p in points] for signal, points in calibration.curves.items()},
    }
    atomic_write_text(folder / POINTS_FILE, json.dumps(points, indent=1))
    page = folder / TABLE_FILE
    atomic_write_text(page, calibration_markdown(calibration, title))
    return page


def _share_of_fallback(accuracy: float, fallback_accuracy: float) -> str:
    if not fallback_accuracy:
        return "the fallback scored nothing"
    return f"{accuracy / fallback_accuracy:.1%} of the fallback's"
