"""How often structured stages write what their format parses, with formats enforced while decoding and without.

recall:  the fslm-paper stack's `recall` stage (format `list`, 72 new tokens) on
         the embedded SmolLM2-135M-Instruct, untrained; it reads only the prompt,
         so alone it writes what it writes inside the four-stage stack.
facts:   a stage of the same model with format `json` and a small schema
         ({"topic": str, "facts": [str]}, bounded lengths), 160 new tokens.

Each runs over the same Alpaca instructions (those without input) with
enforcement on (`fslm run` default) and off (`--no-enforce-formats`): the share
of outputs that parse (and, for json, satisfy the schema), and the speed cost
(wall time, generated tokens/s). Greedy; one process, the model loaded once and
its load not counted.

    python benchmarks/structured_formats.py [--prompts 64] [--batch-size 32]   # a few minutes
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

from alpaca_prompts import ALPACA, load_prompts

MODEL = "smollm2-135m-instruct"
FACTS_SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "maxLength": 60},
        "facts": {"type": "array", "items": {"type": "string", "maxLength": 100}, "maxItems": 4},
    },
    "required": ["topic", "facts"],
    "additionalProperties": False,
}




def stacks():
    import fslm_core
    from fslm_core import GenerationSettings, Stack, Stage

    paper = fslm_core.decomposition("fslm-paper").build(MODEL)
    recall = next(stage for stage in paper.stages if stage.name == "recall")
    facts = Stage(
        name="facts",
        model=MODEL,
        instruction="Name the topic of the user's request and two to four key facts needed to answer it.",
        template="User request:\n{prompt}",
        format="json",
        json_schema=FACTS_SCHEMA,
        generation=GenerationSettings(max_new_tokens=160),
    )
    return {"recall": Stack(name="recall", stages=[recall]), "facts": Stack(name="facts", stages=[facts])}


def measure(stack, prompts: list[str], batch_size: int, pool, enforce: bool) -> dict:
    started = time.perf_counter()
    traces = stack.run(prompts, batch_size=batch_size, pool=pool, enforce_formats=enforce)
    run_s = time.perf_counter() - started
    messages = [trace.messages[0] for trace in traces]
    tokens = sum(message.completion_tokens for message in messages)
    valid = sum(message.parse_error is None and bool(message.fields) for message in messages)
    return {
        "valid": valid,
        "share_valid": valid / len(messages),
        "run_s": run_s,
        "generated_tokens": tokens,
        "tokens_per_s": tokens / run_s,
        "examples": [message.text for message in messages[:2]],
        "errors": sorted({message.parse_error for message in messages if message.parse_error})[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prompts-file", type=Path, default=ALPACA, help="Alpaca-format JSON (instructions without input are used).")
    parser.add_argument("--json", type=Path, help="Also write the results to this file.")
    args = parser.parse_args()

    import torch

    from fslm_core import ModelPool
    from fslm_core.runtime import bind_stack
    from fslm_core.runtime.devices import cpu_summary

    prompts = load_prompts(args.prompts_file, args.prompts)
    pool = ModelPool()
    by_stage = stacks()
    started = time.perf_counter()
    for stack in by_stage.values():
        bind_stack(stack, pool=pool)
    load_s = time.perf_counter() - started
    # One short run first, so that neither measured run pays for one-time set-up (llguidance's tokenizer, ~1 s).
    by_stage["recall"].run(prompts[:2], pool=pool)

    results = {}
    for name, stack in by_stage.items():
        for enforce in (True, False):
            results[f"{name} {'on' if enforce else 'off'}"] = measure(stack, prompts, args.batch_size, pool, enforce)

    cpu = cpu_summary()
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"CPU: {cpu}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{len(prompts)} Alpaca prompts, {MODEL} (untrained), greedy, batch size {args.batch_size}, load {load_s:.1f} s")
    print(f"{'stage / enforcement':<22}{'valid':>8}{'share':>8}{'run s':>9}{'gen tokens':>12}{'tokens/s':>10}")
    for name, row in results.items():
        print(f"{name:<22}{row['valid']:>8}{row['share_valid']:>8.1%}{row['run_s']:>9.1f}"
              f"{row['generated_tokens']:>12}{row['tokens_per_s']:>10.1f}")
    for name in by_stage:
        on, off = results[f"{name} on"], results[f"{name} off"]
        print(f"{name}: enforcement takes x{on['run_s'] / off['run_s']:.2f} the wall time, "
              f"x{on['tokens_per_s'] / off['tokens_per_s']:.2f} the tokens/s")
    for name, row in results.items():
        print(f"{name} first outputs: {json.dumps(row['examples'], ensure_ascii=False)[:400]}")
        if row["errors"]:
            print(f"{name} parse errors seen: {row['errors']}")
    if args.json:
        args.json.write_text(json.dumps({"load_s": load_s, "cpu": cpu, "results": results}, indent=2))


if __name__ == "__main__":
    main()
