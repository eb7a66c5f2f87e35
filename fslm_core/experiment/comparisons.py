"""Paired comparisons of two systems scored on the same documents.

Per document each system has a score (1/0 for accuracy, a number in [0, 1]
for TruthfulQA's mc2). The difference of the means is reported with its
standard error over documents, a 95% interval from a paired bootstrap
(documents resampled together for both systems), and a two-sided p-value:
McNemar's exact test where both scores are 0/1, the paired bootstrap's
otherwise. With one test per task, :func:`holm` adjusts the p-values of a
family of tasks, so that "better on some task" keeps its 5% error rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PairedComparison:
    documents: int
    mean_a: float
    mean_b: float
    difference: float  # mean_a - mean_b
    stderr: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    a_only: int | None = None  # documents only system a got right (binary scores)
    b_only: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def mean_and_stderr(scores: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation over sqrt(n), as lm-eval reports)."""
    n = len(scores)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(scores) / n
    if n < 2:
        return mean, float("nan")
    variance = sum((score - mean) ** 2 for score in scores) / (n - 1)
    return mean, math.sqrt(variance / n)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the discordant documents as a fair coin's tosses."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, seed: int = 0) -> PairedComparison:
    """System a against system b on the same documents (``a[i]`` and ``b[i]`` score document ``i``)."""
    if len(a) != len(b):
        raise ValueError("paired scores must cover the same documents")
    n = len(a)
    differences = [x - y for x, y in zip(a, b)]
    mean_a, _ = mean_and_stderr(a)
    mean_b, _ = mean_and_stderr(b)
    difference, stderr = mean_and_stderr(differences)
    if n:
        import numpy as np

        values = np.asarray(differences, dtype=float)
        boot = values[np.random.default_rng(seed).integers(0, n, size=(resamples, n))].mean(axis=1)
        ci_low, ci_high = (float(x) for x in np.quantile(boot, [0.025, 0.975]))
    else:
        boot, ci_low, ci_high = [], float("nan"), float("nan")
    binary = all(score in (0, 1) for score in (*a, *b))
    if binary:
        a_only = sum(1 for x, y in zip(a, b) if x > y)
        b_only = sum(1 for x, y in zip(a, b) if y > x)
        return PairedComparison(
            n,
            mean_a,
            mean_b,
            difference,
            stderr,
            ci_low,
            ci_high,
            mcnemar_exact(a_only, b_only),
            "McNemar exact",
            a_only,
            b_only,
        )
    # Bootstrap p-value: how often the resampled difference, centred on zero, is as far from zero as observed.
    extreme = int(sum(abs(value - difference) >= abs(difference) for value in boot))
    p_value = (extreme + 1) / (resamples + 1)
    return PairedComparison(n, mean_a, mean_b, difference, stderr, ci_low, ci_high, p_value, "paired bootstrap")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (same order), controlling the family-wise error."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
