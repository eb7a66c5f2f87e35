"""Moved to :mod:`fslm_core.api.formats` (every plugin base class is in :mod:`fslm_core.api`); kept for old imports."""

from .api.formats import BUILTIN_FORMATS, JsonFormat, KeyValueFormat, ListFormat, MessageFormat

__all__ = ["BUILTIN_FORMATS", "JsonFormat", "KeyValueFormat", "ListFormat", "MessageFormat"]
