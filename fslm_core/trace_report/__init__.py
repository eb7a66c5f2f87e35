"""The trace report (``fslm report``, ``fslm eval --report``): a stack's runs as one static HTML page.

:mod:`.trace_file` reads saved traces back (``fslm run --output`` JSON Lines,
``fslm eval``'s ``traces_<task>.json``); :mod:`.page` lays them out with the
per-stage cost table of :mod:`fslm_core.runtime.costs`. Not to be confused with
``fslm eval``'s score table (:mod:`fslm_core.lmeval.table`) or the
experiment's report (:mod:`fslm_core.experiment.report`).
"""

from .page import OPEN_UP_TO, trace_report_html, write_trace_report
from .trace_file import TraceEntry, documents_to_entries, read_trace_file

__all__ = [
    "OPEN_UP_TO",
    "TraceEntry",
    "documents_to_entries",
    "read_trace_file",
    "trace_report_html",
    "write_trace_report",
]
