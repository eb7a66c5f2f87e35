"""Screenshot of ``fslm serve``'s page after it ran a real prompt: ``docs/serve-page.png``.

Starts ``fslm serve`` on the default stack (the trained SmolLM2 stack when its
plugin is installed), asks one question in headless Chromium (Debian's
package, driven by Playwright) and saves the page once the answer is in.

    .venv/bin/python scripts/screenshot_serve_page.py [--stack NAME] [--prompt TEXT] [--output PNG]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import open_chromium  # noqa: E402  (tests/ holds the shared browser and server helpers)
from serve_process import Server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", help="Stack to serve (default: the default stack).")
    parser.add_argument("--prompt", default="What is the capital of France?")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "serve-page.png")
    args = parser.parse_args()
    server = Server([args.stack] if args.stack else [], log_dir=Path("/tmp"))
    try:
        server.wait_ready(timeout=600)
        with open_chromium() as browser:
            page = browser.new_page(viewport={"width": 900, "height": 760})
            page.goto(server.url + "/")
            page.wait_for_selector("#model option", state="attached")
            page.fill("#prompt", args.prompt)
            page.click("#send")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=300_000)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.output), full_page=True)
    finally:
        server.stop()
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
