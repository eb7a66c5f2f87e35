"""Peak memory of a four-adapter stack on one shared base against one plain model.

Each measurement runs in its own process (peak RSS is per process):
  plain:    one stage on SmolLM2-135M-Instruct, no adapter
  adapters: four stages on the same model id, four distinct LoRA adapters

    python benchmarks/adapter_memory.py [--prompts 16] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = "smollm2-135m-instruct"
QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "What is the boiling point of water in degrees Celsius?",
    "Who wrote Romeo and Juliet?",
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, prompts: int) -> dict:
    from fslm_core import GenerationSettings, ModelPool, Stack, Stage, get_registry
    from fslm_core.testing import build_random_adapter

    settings = GenerationSettings(max_new_tokens=24)
    questions = (QUESTIONS * prompts)[:prompts]
    pool = ModelPool()
    if kind == "plain":
        stack = Stack(name="plain", stages=[Stage(name="only", model=MODEL, instruction="Answer briefly.", generation=settings)])
    else:
        from fslm_core.runtime import in_dtype

        # The base the stack will use: in the dtype `auto` means here, or the adapters' base would be a second one.
        spec = in_dtype(get_registry().model(MODEL), "auto")
        backend = pool.get(spec, get_registry().backend(spec.backend))
        folder = Path(tempfile.mkdtemp(prefix="fslm-adapters-"))
        adapters = [
            build_random_adapter(backend.model, folder / f"stage{i}", seed=i, target_modules=spec.lora_target_modules, rank=16)
            for i in range(4)
        ]
        stack = Stack(
            name="four-adapters",
            stages=[
                Stage(name=f"stage{i}", model=MODEL, adapter=adapters[i], instruction="Answer briefly.",
                      reads=[f"stage{i-1}"] if i else [], generation=settings)
                for i in range(4)
            ],
        )
    stack.run(questions, pool=pool, batch_size=16)
    import psutil

    return {
        "kind": kind,
        "prompts": prompts,
        "bases_loaded": len(pool.loaded()),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_after_run_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--measure", choices=["plain", "adapters"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.prompts)))
        return
    results = {}
    for kind in ("plain", "adapters"):
        output = subprocess.run(
            [sys.executable, __file__, "--measure", kind, "--prompts", str(args.prompts)],
            capture_output=True, text=True, check=True, env=dict(os.environ, HF_HUB_OFFLINE="1"),
        ).stdout
        results[kind] = json.loads(output.strip().splitlines()[-1])
    ratio = results["adapters"]["peak_rss_mb"] / results["plain"]["peak_rss_mb"]
    summary = {**results, "rss_ratio": round(ratio, 3)}
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{'run':<24}{'bases loaded':>14}{'peak RSS MB':>14}{'RSS after run MB':>18}")
    for kind, label in (("plain", "one plain model"), ("adapters", "4 stages, 4 adapters")):
        row = results[kind]
        print(f"{label:<24}{row['bases_loaded']:>14}{row['peak_rss_mb']:>14}{row['rss_after_run_mb']:>18}")
    print(f"peak RSS ratio (adapters / plain): {ratio:.3f}")


if __name__ == "__main__":
    main()
