"""Make docs/trace-report.png: a screenshot of `fslm report` on real traces, taken in headless Chromium.

    .venv/bin/python scripts/screenshot_trace_report.py --traces traces.jsonl rerun.jsonl
    .venv/bin/python scripts/screenshot_trace_report.py      # tiny-model traces (seconds), for a quick look

docs/trace-report.png shows the trained `smollm2-paper` stack on the embedded
SmolLM2: `fslm run --input examples/questions.txt --output traces.jsonl
--cache`, then `fslm run --input rerun.txt --output rerun.jsonl --cache` with
the first and last question again (so the page shows cache hits), then this
script with `--traces traces.jsonl rerun.jsonl`. Without --traces, the traces
come from the `fslm-paper` stages on a tiny random model (fslm_core.testing):
the stages, tokens, timings and cache marks are real, the texts a random
model's. Chromium is the one the browser tests drive (tests/browser.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "docs" / "trace-report.png"
MAX_BYTES = 300_000
PROMPTS = [line for line in (ROOT / "examples" / "questions.txt").read_text().splitlines() if line.strip()]


def tiny_model_traces(folder: Path) -> list[Path]:
    """Two JSON Lines files of the fslm-paper stages on a tiny model: a first run, and a rerun that hits the cache."""
    os.environ["FSLM_CACHE_DIR"] = str(folder / "cache")
    from fslm_core import GenerationSettings, resolve_stack
    from fslm_core.runtime import ModelPool, run_stack
    from fslm_core.runtime.stage_cache import StageCache
    from fslm_core.testing import build_tiny_model

    model = build_tiny_model(folder / "tiny-model")
    stack = resolve_stack(decomposition="fslm-paper", model=f"hf:{model}")
    # A random model writes noise until its token budget ends: a short budget keeps the page to one screen.
    short = GenerationSettings(max_new_tokens=12)
    stages = tuple(stage.model_copy(update={"generation": short}) for stage in stack.stages)
    stack = stack.model_copy(update={"name": "fslm-paper on a tiny random model", "stages": stages})
    cache, pool = StageCache(), ModelPool()
    files = []
    for name, prompts in (("traces.jsonl", PROMPTS[:2]), ("rerun.jsonl", [PROMPTS[0], PROMPTS[2]])):
        traces = run_stack(stack, prompts, pool=pool, cache=cache)
        files.append(folder / name)
        files[-1].write_text("".join(trace.to_json() + "\n" for trace in traces), encoding="utf-8")
    return files


def screenshot(report: Path, output: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from browser import open_chromium

    with open_chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        page.goto(report.as_uri())
        # The first input and its cached rerun open, the others closed: a page's worth of what a reader sees.
        inputs = page.locator("details.input")
        for index in range(inputs.count()):
            if index not in (0, inputs.count() - 2):
                inputs.nth(index).evaluate("item => { item.open = false; }")
        page.screenshot(path=str(output), full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--traces", nargs="+", type=Path, help="traces files to show (default: tiny-model traces)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"PNG to write (default: {DEFAULT_OUTPUT})")
    arguments = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from fslm_core.cli import main as fslm

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        traces = arguments.traces or tiny_model_traces(folder)
        report = folder / "report.html"
        try:
            fslm(["report", *map(str, traces), "-o", str(report)])
        except SystemExit as exit_:
            if exit_.code:
                raise
        screenshot(report, arguments.output)
    size = arguments.output.stat().st_size
    print(f"{arguments.output}: {size / 1000:.0f} kB")
    if size > MAX_BYTES:
        sys.exit(f"{arguments.output} is larger than {MAX_BYTES / 1000:.0f} kB: show fewer inputs")


if __name__ == "__main__":
    main()
