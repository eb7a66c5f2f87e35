"""Moved to :mod:`fslm_core.api.benchmarks` ; kept so old imports work."""

from .api.benchmarks import Benchmark

__all__ = ["Benchmark"]
