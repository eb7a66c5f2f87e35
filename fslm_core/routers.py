"""Moved to :mod:`fslm_core.api.routers` (every plugin base class is in :mod:`fslm_core.api`); kept for old imports."""

from .api.routers import BUILTIN_ROUTERS, ParallelRouter, Router

__all__ = ["BUILTIN_ROUTERS", "ParallelRouter", "Router"]
