"""The trace report: one static HTML page that shows, per input, each stage's message and, at the end, the costs.

The page needs nothing but a browser: its CSS and its small script (a filter
box, expand and collapse) are inline, and it loads nothing from anywhere.
Traces hold model output, so every piece of text goes through
:func:`html.escape`; the page's Content-Security-Policy also lets only its own
script run (by hash), so a text that slipped through escaping still could not
run code.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from html import escape
from pathlib import Path

from ..files import atomic_write_text
from ..messages import Message, RoutingDecision, Trace
from ..runtime.costs import COST_COLUMNS, StageCost, cost_cells
from .trace_file import TraceEntry

OPEN_UP_TO = 20
"""Inputs shown opened when the report holds at most this many; a longer report starts collapsed."""

PREVIEW_CHARACTERS = 200
NO_ANSWER = "(none: the final stage wrote no answer here; in an evaluation it may have scored answer choices)"

_STYLE = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --accent: #0969da;
        --cache: #1a7f37; --cache-bg: #dafbe1; --error: #cf222e; --error-bg: #ffebe9; --route-bg: #ddf4ff; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); }
header, main, #summary { max-width: 1100px; margin: 0 auto; padding: 0 16px; }
header h1 { font-size: 20px; margin: 16px 0 2px; }
.meta, .source, .metrics, .note { color: var(--muted); font-size: 12.5px; }
.toolbar { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid var(--line);
           display: flex; gap: 8px; align-items: center; padding: 8px max(16px, calc((100% - 1100px) / 2 + 16px)); }
.toolbar input { flex: 1; font: inherit; padding: 5px 8px; border: 1px solid var(--line); border-radius: 6px; }
.toolbar button { font: inherit; padding: 4px 10px; border: 1px solid var(--line); border-radius: 6px;
                  background: var(--soft); cursor: pointer; }
.toolbar #shown { color: var(--muted); white-space: nowrap; }
details.input { border: 1px solid var(--line); border-radius: 8px; margin: 10px 0; }
details.input > summary { cursor: pointer; padding: 8px 12px; display: flex; gap: 8px; align-items: baseline;
                          background: var(--soft); border-radius: 8px; }
details.input[open] > summary { border-bottom: 1px solid var(--line); border-radius: 8px 8px 0 0; }
.number { color: var(--muted); font-variant-numeric: tabular-nums; }
.preview { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-weight: 600; }
.body { padding: 4px 12px 12px; }
h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); margin: 10px 0 4px; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; font: 13px/1.45 ui-monospace, "DejaVu Sans Mono",
      monospace; }
.prompt pre, .answer pre { background: var(--soft); padding: 6px 8px; border-radius: 6px; }
ol.chain { list-style: none; padding: 0; margin: 0; }
.message { border-left: 3px solid var(--accent); padding: 4px 0 4px 10px; margin: 8px 0; }
.message.cached { border-left-color: var(--cache); }
.message .head { display: flex; gap: 8px; align-items: baseline; flex-wrap: wrap; }
.stage { font-weight: 700; }
.model { color: var(--muted); font-size: 12.5px; }
.badge { font-size: 11.5px; border-radius: 10px; padding: 0 7px; border: 1px solid transparent; white-space: nowrap; }
.badge.cache { color: var(--cache); background: var(--cache-bg); border-color: #aceebb; }
.badge.error { color: var(--error); background: var(--error-bg); border-color: #ffcecb; }
.badge.route { color: var(--accent); background: var(--route-bg); border-color: #b6e3ff; }
.badge.count { color: var(--muted); border-color: var(--line); }
.message pre.text { margin: 4px 0; }
.parse-error { color: var(--error); background: var(--error-bg); padding: 3px 8px; border-radius: 6px; margin: 4px 0;
               font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; }
table.fields { margin: 4px 0; }
table.fields th { text-align: left; font-weight: 600; padding: 1px 10px 1px 0; vertical-align: top; }
table.fields td { padding: 1px 0; }
.routing ul { margin: 0; padding-left: 18px; }
#summary { margin-bottom: 32px; }
#summary h2 { font-size: 17px; margin: 24px 0 8px; }
table.costs th, table.costs td, table.decisions th, table.decisions td { padding: 4px 10px;
    border-bottom: 1px solid var(--line); text-align: right; font-variant-numeric: tabular-nums; }
table.costs th:first-child, table.costs td:first-child, table.decisions th, table.decisions td:not(.n) {
    text-align: left; }
table.costs tfoot td { font-weight: 700; border-bottom: none; }
#no-match { text-align: center; color: var(--muted); }
"""

_SCRIPT = """
(() => {
  const inputs = Array.from(document.querySelectorAll("details.input"));
  const box = document.getElementById("filter");
  const shown = document.getElementById("shown");
  const noMatch = document.getElementById("no-match");
  let texts = null;
  let timer = null;
  const apply = () => {
    texts = texts || inputs.map((item) => item.textContent.toLowerCase());
    const words = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
    let count = 0;
    inputs.forEach((item, index) => {
      const match = words.every((word) => texts[index].includes(word));
      item.hidden = !match;
      count += match ? 1 : 0;
    });
    shown.textContent = `${count} of ${inputs.length} inputs`;
    noMatch.hidden = count > 0;
  };
  box.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(apply, 150); });
  box.addEventListener("keydown", (event) => { if (event.key === "Enter") { clearTimeout(timer); apply(); } });
  const openAll = (open) => inputs.forEach((item) => { if (!item.hidden) item.open = open; });
  document.getElementById("expand").addEventListener("click", () => openAll(true));
  document.getElementById("collapse").addEventListener("click", () => openAll(false));
})();
"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
# Only the script above may run, and nothing may be fetched: the page works from a file, offline.
_POLICY = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{_SCRIPT_HASH}'"


def trace_report_html(entries: Sequence[TraceEntry], costs: Sequence[StageCost], title: str | None = None) -> str:
    """The report page for ``entries`` with the cost table of ``costs`` (:mod:`fslm_core.runtime.costs`)."""
    stacks = list(dict.fromkeys(entry.trace.stack for entry in entries))
    title = title or f"Traces of {', '.join(stacks) or 'no stack'}"
    messages = [message for entry in entries for message in entry.trace.messages]
    opened = len(entries) <= OPEN_UP_TO
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">',
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<header><h1>{escape(title)}</h1>",
        f'<p class="meta">{_plural(len(entries), "input")} · {_plural(len(messages), "message")} · '
        f"{sum(m.cached for m in messages)} from the stage cache · stack: {escape(', '.join(stacks))}</p></header>",
        '<nav class="toolbar">',
        '<input id="filter" type="search" aria-label="Filter inputs" '
        'placeholder="Filter: words in a prompt, message or answer">',
        '<button id="expand" type="button">Expand all</button>',
        '<button id="collapse" type="button">Collapse all</button>',
        f'<span id="shown" aria-live="polite">{len(entries)} of {len(entries)} inputs</span>',
        '<a href="#summary">Summary</a></nav>',
        '<main id="inputs">',
        *(_input_html(number, entry, opened) for number, entry in enumerate(entries, start=1)),
        '<p id="no-match" hidden>No input matches the filter.</p>',
        "</main>",
        _summary_html(entries, costs),
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_trace_report(
    path: str | Path, entries: Sequence[TraceEntry], costs: Sequence[StageCost], title: str | None = None
) -> Path:
    """Write the report page to ``path`` atomically and return the path."""
    path = Path(path)
    atomic_write_text(path, trace_report_html(entries, costs, title))
    return path


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _input_html(number: int, entry: TraceEntry, opened: bool) -> str:
    trace = entry.trace
    preview = " ".join(trace.prompt.split())[:PREVIEW_CHARACTERS]
    badges = [f'<span class="badge count">{_plural(len(trace.messages), "stage")}</span>']
    cached = sum(message.cached for message in trace.messages)
    if cached:
        badges.append(f'<span class="badge cache">{cached} cached</span>')
    errors = sum(message.parse_error is not None for message in trace.messages)
    if errors:
        badges.append(f'<span class="badge error">{_plural(errors, "parse error")}</span>')
    if trace.routing:
        badges.append(f'<span class="badge route">{_plural(len(trace.routing), "routing decision")}</span>')
    decisions = {}
    for decision in trace.routing:
        decisions.setdefault(decision.stage, []).append(decision)
    body = [
        f'<p class="source">{escape(trace.stack)} · {escape(entry.source)}</p>',
        f'<section class="prompt"><h3>prompt</h3>{_pre(trace.prompt)}</section>',
        '<ol class="chain">',
        *(_message_html(message, decisions.get(message.stage, [])) for message in trace.messages),
        "</ol>",
    ]
    if trace.routing:
        items = "".join(f"<li>{_decision_html(decision)}</li>" for decision in trace.routing)
        body.append(f'<section class="routing"><h3>routing</h3><ul>{items}</ul></section>')
    answer = trace.answer if trace.answer is not None else NO_ANSWER
    body.append(f'<section class="answer"><h3>answer</h3>{_pre(answer)}</section>')
    return (
        f'<details class="input" id="input-{number}"{" open" if opened else ""}>'
        f'<summary><span class="number">#{number}</span><span class="preview">{escape(preview)}</span>'
        f"{''.join(badges)}</summary>"
        f'<div class="body">{"".join(body)}</div></details>'
    )


def _message_html(message: Message, decisions: Sequence[RoutingDecision]) -> str:
    adapter = f"adapter {message.adapter}" if message.adapter else "base model"
    head = [f'<span class="stage">{escape(message.stage)}</span>']
    if message.cached:
        head.append('<span class="badge cache" title="read from the stage cache, not generated">cache hit</span>')
    if message.parse_error is not None:
        head.append('<span class="badge error">parse error</span>')
    head.extend(f'<span class="badge route">{escape(d.decision)} ({escape(d.router)})</span>' for d in decisions)
    head.append(f'<span class="model">{escape(message.model)} · {escape(adapter)}</span>')
    parts = [f'<li class="message{" cached" if message.cached else ""}" data-stage="{escape(message.stage)}">']
    parts.append(f'<div class="head">{"".join(head)}</div>')
    parts.append(_pre(message.text if message.text.strip() else "(empty)", "text"))
    if message.fields:
        rows = "".join(
            f"<tr><th>{escape(str(key))}</th><td>{_pre(_field_text(value))}</td></tr>"
            for key, value in message.fields.items()
        )
        parts.append(f'<table class="fields" aria-label="parsed fields">{rows}</table>')
    if message.parse_error is not None:
        parts.append(f'<p class="parse-error">not parsed: {escape(message.parse_error)}</p>')
    spent = "from the stage cache: no time spent in this run" if message.cached else f"{message.latency_s:.2f} s"
    parts.append(
        f'<p class="metrics">{message.prompt_tokens} prompt tokens · {message.completion_tokens} completion tokens'
        f" · {spent} · batch of {message.batch_size}</p></li>"
    )
    return "".join(parts)


def _pre(text: str, css_class: str = "") -> str:
    # An HTML parser drops the newline that opens a <pre>: give it one, so a text that starts with one keeps it.
    opening = f'<pre class="{css_class}">' if css_class else "<pre>"
    return f"{opening}\n{escape(text)}</pre>"


def _field_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=1)


def _decision_html(decision: RoutingDecision) -> str:
    reason = f": {escape(decision.reason)}" if decision.reason else ""
    return (
        f"<b>{escape(decision.stage)}</b> {escape(decision.decision)} "
        f'<span class="model">({escape(decision.router)})</span>{reason}'
    )


def _summary_html(entries: Sequence[TraceEntry], costs: Sequence[StageCost]) -> str:
    traces: list[Trace] = [entry.trace for entry in entries]
    *rows, total = cost_cells(costs)
    head = "".join(f'<th scope="col">{escape(name)}</th>' for name in COST_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    foot = "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in total) + "</tr>"
    parts = [
        '<section id="summary"><h2>Summary</h2>',
        "<h3>cost per stage</h3>",
        f'<table class="costs"><thead><tr>{head}</tr></thead><tbody>{body}</tbody><tfoot>{foot}</tfoot></table>',
        '<p class="note">runs: messages the stage wrote; cached: of those, read from the stage cache. '
        "seconds: each message's share of its batch's wall time (a cached message costs none). "
        "params, adapter: parameters of the base model and of the LoRA adapter; FLOPs: about two per parameter "
        "per token read or written. A dash: not known on this machine (a model id or adapter folder it lacks).</p>",
    ]
    errors = Counter(m.stage for trace in traces for m in trace.messages if m.parse_error is not None)
    decisions = Counter((d.stage, d.decision, d.router) for trace in traces for d in trace.routing)
    if errors:
        rows_html = "".join(f'<tr><td>{escape(stage)}</td><td class="n">{n}</td></tr>' for stage, n in errors.items())
        parts.append(
            "<h3>parse errors</h3>"
            f'<table class="decisions"><thead><tr><th>stage</th><th>messages not parsed</th></tr></thead>'
            f"<tbody>{rows_html}</tbody></table>"
        )
    if decisions:
        rows_html = "".join(
            "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in key) + f'<td class="n">{n}</td></tr>'
            for key, n in decisions.items()
        )
        parts.append(
            "<h3>routing decisions</h3>"
            '<table class="decisions"><thead><tr><th>stage</th><th>decision</th><th>router</th><th>inputs</th></tr>'
            f"</thead><tbody>{rows_html}</tbody></table>"
        )
    parts.append("</section>")
    return "".join(parts)
