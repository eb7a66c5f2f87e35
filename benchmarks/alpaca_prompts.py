"""The prompts every benchmark here runs on: the first Alpaca instructions that need no input."""

from __future__ import annotations

import json
from pathlib import Path

ALPACA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alpaca" / "alpaca_5000.json"


def load_prompts(path: Path, count: int) -> list[str]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    prompts = [row["instruction"].strip() for row in rows if not row.get("input", "").strip()]
    if len(prompts) < count:
        raise SystemExit(f"{path} has only {len(prompts)} instructions without input; asked for {count}")
    return prompts[:count]
