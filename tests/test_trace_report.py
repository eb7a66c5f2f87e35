"""`fslm report` and `fslm eval --report`: real traces of a tiny stack as one HTML page, checked in Chromium."""

from __future__ import annotations

import json
import re

import pytest
from fslm_cli import run_fslm
from fslm_plugin_benchmarks import DATA_DIR_ENV, FIXTURES_DIR
from playwright.sync_api import expect
from tiny_stacks import written

from fslm_core import GenerationSettings, Message, RoutingDecision, Stack, Stage, Trace
from fslm_core.cli import main
from fslm_core.lmeval import TRACE_REPORT_FILE
from fslm_core.runtime.costs import render_costs, stage_costs, traced_stage_costs
from fslm_core.trace_report import OPEN_UP_TO, TraceEntry, read_trace_file, trace_report_html

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INJECTED = "<script>window.injected = true</script> Is <b>this</b> bold?"
# The filter test looks for words of these prompts: words the tiny model's tokenizer never saw, so its
# random output cannot hold them by chance.
FIRST_RUN = ["What is the capital of Burkina Faso?", INJECTED]
RERUN = ["What is the capital of Burkina Faso?", "Which planet is the largest?"]


def three_stage_stack(model_id: str, adapters) -> Stack:
    short = GenerationSettings(max_new_tokens=6)
    return Stack(
        name="tiny-report",
        stages=[
            Stage(name="interpret", model=model_id, adapter=adapters[0], instruction="Restate.", generation=short),
            Stage(
                name="recall",
                model=model_id,
                adapter=adapters[1],
                instruction="List facts.",
                format="list",
                generation=short,
            ),
            Stage(
                name="answer",
                model=model_id,
                instruction="Answer.",
                reads=("interpret", "recall"),
                generation=short,
            ),
        ],
    )


@pytest.fixture(scope="module")
def traces_files(tiny_model_id, tiny_adapters, tmp_path_factory):
    """Two `fslm run --output` files: a first run, and a rerun whose first prompt comes from the stage cache."""
    folder = tmp_path_factory.mktemp("traces")
    stack_file = three_stage_stack(tiny_model_id, tiny_adapters).save(folder / "stack.yaml")
    import structlog

    saved = structlog.get_config()
    environment = pytest.MonkeyPatch()
    environment.setenv("FSLM_CACHE_DIR", str(folder / "cache"))
    try:
        for name, prompts in (("first.jsonl", FIRST_RUN), ("rerun.jsonl", RERUN)):
            main(["run", "--stack", str(stack_file), "--cache", "--output", str(folder / name), *prompts])
    finally:
        environment.undo()
        structlog.configure(**saved)
    return folder / "first.jsonl", folder / "rerun.jsonl"


# Messages and traces -----------------------------------------------------------------------


def test_a_trace_written_before_routing_and_parse_errors_existed_still_loads():
    old = {
        "stack": "fslm-paper",
        "prompt": "What is the capital of France?",
        "messages": [
            {
                "stage": "answer",
                "text": "Paris.",
                "fields": None,
                "model": "smollm2-135m-instruct",
                "adapter": None,
                "prompt_tokens": 40,
                "completion_tokens": 3,
                "latency_s": 0.5,
                "batch_size": 1,
                "cached": False,
            }
        ],
        "answer": "Paris.",
    }
    trace = Trace.model_validate_json(json.dumps(old))
    assert trace.routing == [] and trace.messages[0].parse_error is None
    assert trace.render().splitlines()[-1] == "answer: Paris."


def test_the_text_form_shows_parse_errors_and_routing_decisions_briefly():
    message = written("recall", "Paris, France", parse_error="no '- ' item on any line")
    decision = RoutingDecision(stage="reason", decision="skipped", router="confidence", reason="recall was sure")
    trace = Trace(stack="s", prompt="p", messages=[message], routing=[decision], answer="Paris")
    lines = trace.render().splitlines()
    assert "    (not parsed: no '- ' item on any line)" in lines
    assert "route: reason skipped (confidence): recall was sure" in lines
    assert Trace.model_validate_json(trace.to_json()) == trace
    with pytest.raises(ValueError, match="decision"):
        RoutingDecision(stage="reason", decision="", router="confidence")


# Reading traces files and the cost table ------------------------------------------------------


def test_traces_files_read_back_with_where_each_trace_came_from(traces_files):
    first, rerun = traces_files
    entries = read_trace_file(first) + read_trace_file(rerun)
    assert [entry.trace.prompt for entry in entries] == FIRST_RUN + RERUN
    assert [entry.source for entry in entries] == [
        "first.jsonl line 1",
        "first.jsonl line 2",
        "rerun.jsonl line 1",
        "rerun.jsonl line 2",
    ]
    assert all(message.cached for message in entries[2].trace.messages)
    assert not any(message.cached for entry in (entries[0], entries[1], entries[3]) for message in entry.trace.messages)


def test_the_cost_table_without_the_stack_matches_the_one_with_it(traces_files, tiny_model_id, tiny_adapters):
    traces = [entry.trace for path in traces_files for entry in read_trace_file(path)]
    stack = three_stage_stack(tiny_model_id, tiny_adapters)
    assert traced_stage_costs(traces) == stage_costs(stack, traces)
    recall = traced_stage_costs(traces)[1]
    assert (recall.stage, recall.runs, recall.cached) == ("recall", 4, 1)
    assert recall.adapter_parameters > 0


def test_stages_only_some_inputs_ran_keep_their_place_and_unknown_sizes_show_a_dash():
    def message(stage: str, model: str = "no-such-model", adapter: str | None = None) -> Message:
        return written(stage, "t", model, adapter=adapter, prompt_tokens=2, latency_s=0.4, batch_size=2)

    skipping = Trace(stack="s", prompt="a", messages=[message("first"), message("last")])
    full = Trace(
        stack="s", prompt="b", messages=[message("first"), message("middle", adapter="/gone"), message("last")]
    )
    rows = traced_stage_costs([skipping, full])
    assert [row.stage for row in rows] == ["first", "middle", "last"]
    assert [row.runs for row in rows] == [2, 1, 2]
    assert rows[0].seconds == pytest.approx(0.4)  # two messages, each half of a 0.4 s batch of two
    assert rows[1].base_parameters is None and rows[1].adapter_parameters is None and rows[1].flops is None
    total = render_costs(rows).splitlines()[-1].split()
    assert total[:3] == ["total", "5", "0"] and total[-2:] == ["-", "-"]


# `fslm report` ------------------------------------------------------------------------------


def test_fslm_report_writes_one_page_atomically(capsys, traces_files, tmp_path):
    first, rerun = traces_files
    page = tmp_path / "out" / "report.html"
    code, out, err = run_fslm(capsys, "report", first, rerun, "-o", page)
    assert code == 0, err
    assert out.strip() == f"4 traces: {page}"
    assert [path.name for path in page.parent.iterdir()] == ["report.html"]  # no temporary file left
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.count('<details class="input"') == 4
    # Self-contained: nothing fetched from anywhere.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    # One file given: the page goes beside it.
    code, out, err = run_fslm(capsys, "report", first)
    assert code == 0, err
    assert first.with_suffix(".html").is_file()


def test_every_text_of_a_trace_is_escaped():
    hostile = '<img src=x onerror="alert(1)">&'
    trace = Trace(
        stack=hostile,
        prompt=hostile,
        messages=[
            written(hostile, hostile, hostile, fields={hostile: [hostile]}, adapter=hostile, parse_error=hostile)
        ],
        routing=[RoutingDecision(stage=hostile, decision=hostile, router=hostile, reason=hostile)],
        answer=hostile,
    )
    html = trace_report_html([TraceEntry(trace, hostile)], traced_stage_costs([trace]), title=hostile)
    assert "<img" not in html
    assert html.count("&lt;img src=x onerror=") >= 12


def test_a_long_report_starts_collapsed():
    trace = Trace(stack="s", prompt="p")
    few = trace_report_html([TraceEntry(trace, "x")] * OPEN_UP_TO, [])
    many = trace_report_html([TraceEntry(trace, "x")] * (OPEN_UP_TO + 1), [])
    assert few.count('class="input" id="input-1" open') == 1
    assert " open>" not in many


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"stack": "s", "prompt": "p"}\n{"stack": "s", "prompt"\n', "line 2: not valid JSON"),
        ('{"stack": "s", "prompt": "p"}\n\n{"stack": "s"}\n', "line 3: not a trace: prompt: Field required"),
        ('{"stack": "s", "prompt": "p", "messages": [{"stage": "a"}]}\n', "line 1: not a trace: messages.0.text"),
        ("[1, 2]\n", "line 1: not a trace"),
        ("\n\n", "holds no traces"),
        ('{"stack": "s", "task": "t", "documents": [{"doc_id": 0}]}', "documents.0: expected an object"),
    ],
    ids=["bad-json", "missing-field", "bad-message", "not-an-object", "empty", "bad-eval-file"],
)
def test_bad_traces_files_get_one_line_naming_the_file_and_line(capsys, tmp_path, content, expected):
    bad = tmp_path / "traces.jsonl"
    bad.write_text(content, encoding="utf-8")
    code, _, err = run_fslm(capsys, "report", bad, "-o", tmp_path / "report.html")
    assert code == 1
    assert err.startswith(f"error: {bad}") and expected in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "report.html").exists()


def test_bad_arguments_name_the_option_at_fault(capsys, traces_files, tmp_path):
    first, rerun = traces_files
    code, _, err = run_fslm(capsys, "report", tmp_path / "none.jsonl", "-o", tmp_path / "r.html")
    assert code == 1 and err.strip() == f"error: {tmp_path / 'none.jsonl'}: file not found"
    code, _, err = run_fslm(capsys, "report", first, "-o", tmp_path)
    assert code == 1 and err.strip() == f"error: --output: {tmp_path} is a folder; give the HTML file to write"
    code, _, err = run_fslm(capsys, "report", first, rerun)
    assert code == 1 and "--output: give the HTML file to write" in err
    code, _, err = run_fslm(capsys, "report", first, "-o", first)
    assert code == 1 and "is a traces file to read" in err


# `fslm eval --report` -----------------------------------------------------------------------


def test_fslm_eval_report_shows_each_documents_traces_and_the_stacks_costs(
    capsys, monkeypatch, tiny_model_id, tiny_adapters, tmp_path
):
    monkeypatch.setenv(DATA_DIR_ENV, str(FIXTURES_DIR))
    stack_file = three_stage_stack(tiny_model_id, tiny_adapters).save(tmp_path / "stack.yaml")
    output = tmp_path / "eval-out"
    common = ["eval", "--stack", stack_file, "--tasks", "local_arc_easy", "--limit", "2", "--bootstrap-iters", "0"]
    code, _, err = run_fslm(capsys, *common, "--report")
    assert code == 1 and err.strip() == f"error: --report: give --output FOLDER to write {TRACE_REPORT_FILE} into"

    code, out, err = run_fslm(capsys, *common, "--output", output, "--report")
    assert code == 0, err
    page = output / TRACE_REPORT_FILE
    assert f"trace report: {page}" in out
    html = page.read_text(encoding="utf-8")
    assert "local_arc_easy document 0" in html and "local_arc_easy document 1" in html
    # Multiple choice: the final stage scores the choices and writes no message; its upstream stages do.
    documents = json.loads((output / "traces_local_arc_easy.json").read_text())["documents"]
    assert html.count('<details class="input"') == sum(len(document["traces"]) for document in documents) > 0
    assert 'data-stage="interpret"' in html and 'data-stage="answer"' not in html
    # The same page comes back from the traces file the evaluation wrote.
    assert [entry.source for entry in read_trace_file(output / "traces_local_arc_easy.json")][:1] == [
        "local_arc_easy document 0"
    ]


# In a browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_page(traces_files, tmp_path_factory):
    """The report of both runs, with a routing decision and a parse error as routers and formats will add them."""
    entries = [entry for path in traces_files for entry in read_trace_file(path)]
    routed = entries[3].trace.model_copy(deep=True)
    routed.routing = [
        RoutingDecision(stage="recall", decision="ran", router="confidence", reason="interpret was unsure")
    ]
    routed.messages[1] = routed.messages[1].model_copy(update={"parse_error": "no '- ' item on any line"})
    entries[3] = TraceEntry(routed, entries[3].source)
    page = tmp_path_factory.mktemp("report") / "report.html"
    page.write_text(trace_report_html(entries, traced_stage_costs([e.trace for e in entries])), encoding="utf-8")
    return page, entries


@pytest.mark.browser
def test_the_report_shows_every_stage_its_costs_and_cache_hits_in_chromium(browser_page, report_page):
    path, entries = report_page
    page = browser_page
    page.goto(path.as_uri())
    assert page.title() == "Traces of tiny-report"
    inputs = page.locator("details.input")
    assert inputs.count() == 4
    first = inputs.nth(0)
    assert first.locator(".stage").all_inner_texts() == ["interpret", "recall", "answer"]
    for message, shown in zip(entries[0].trace.messages, first.locator("pre.text").all_text_contents()):
        # An HTML parser reads every line break as "\n".
        written = message.text.replace("\r\n", "\n").replace("\r", "\n")
        assert shown == (written if message.text.strip() else "(empty)")
    interpret = entries[0].trace.messages[0]
    metrics = f"{interpret.prompt_tokens} prompt tokens · {interpret.completion_tokens} completion tokens"
    assert first.locator(".metrics").first.inner_text().startswith(metrics)

    rerun = inputs.nth(2)
    assert rerun.locator(".badge.cache", has_text="cache hit").count() == 3
    assert rerun.locator(".badge.cache", has_text="cache hit").first.is_visible()
    assert first.locator(".badge.cache").count() == 0

    routed = inputs.nth(3)
    assert routed.locator(".routing li").inner_text() == "recall ran (confidence): interpret was unsure"
    assert routed.locator(".parse-error").inner_text() == "not parsed: no '- ' item on any line"

    costs = page.locator("table.costs")
    assert costs.is_visible()
    assert costs.locator("thead th").all_inner_texts()[:3] == ["stage", "runs", "cached"]
    rows = [row.split("\t") for row in costs.locator("tbody tr").all_inner_texts()]
    assert [row[:3] for row in rows] == [["interpret", "4", "1"], ["recall", "4", "1"], ["answer", "4", "1"]]
    assert costs.locator("tfoot td").first.inner_text() == "total"


@pytest.mark.browser
def test_model_and_prompt_text_is_shown_as_text_and_never_run(browser_page, report_page):
    path, _ = report_page
    page = browser_page
    page.goto(path.as_uri())
    prompt = page.locator("details.input").nth(1).locator(".prompt pre")
    assert prompt.inner_text() == INJECTED
    assert prompt.locator("b, script").count() == 0
    assert page.evaluate("window.injected") is None
    assert page.locator("script").count() == 1  # the page's own
    # Had escaping missed a script, the page's policy would still refuse to run it.
    page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.injected = true";
            document.body.append(script);
        }"""
    )
    assert page.evaluate("window.injected") is None


@pytest.mark.browser
def test_the_filter_box_keeps_the_inputs_that_hold_every_word(browser_page, report_page):
    path, _ = report_page
    page = browser_page
    page.goto(path.as_uri())
    inputs = page.locator("details.input")
    page.fill("#filter", "planet LARGEST")
    page.press("#filter", "Enter")
    assert [inputs.nth(i).is_visible() for i in range(4)] == [False, False, False, True]
    assert page.locator("#shown").inner_text() == "1 of 4 inputs"
    page.fill("#filter", "burkina faso")
    # The box filters a moment after the last key; expect() polls for it (the page's policy refuses
    # the string evaluation that wait_for_function would use).
    expect(page.locator("#shown")).to_have_text("2 of 4 inputs")
    assert [inputs.nth(i).is_visible() for i in range(4)] == [True, False, True, False]
    page.fill("#filter", "no input holds this")
    page.press("#filter", "Enter")
    assert page.locator("#no-match").is_visible()
    page.fill("#filter", "")
    page.press("#filter", "Enter")
    assert page.locator("#shown").inner_text() == "4 of 4 inputs"

    page.click("#collapse")
    assert not page.locator(".prompt pre").first.is_visible()
    page.click("#expand")
    assert page.locator(".prompt pre").first.is_visible()
