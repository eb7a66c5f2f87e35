"""Training cost of a stack, side by side: this checkout's `fslm train` against the same command at an earlier
commit (by default the last one before the training loop's speed and memory work), and optionally HF Trainer.

Each side trains the same distilled examples with its own default settings
(rank 8, batch 8, max length 512, one epoch here) in its own process, one side
at a time, so its peak RSS is its own. Throughput is tokens read per second of
the training loop (prompt + target, padding not counted), per stage, as each
side's `training.json` records it; the reference commit is checked out with
`git worktree` and put first on `PYTHONPATH`.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python benchmarks/train_throughput.py \\
        --distilled runs/paper/distilled --examples 128

With ``--dtypes float32,int8`` the sides are this checkout in each of those
dtypes (``fslm train --dtype``) instead of the reference commit against it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from machine_info import machine

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_COMMIT = "0dce587"  # the training loop before the no-mask attention, micro-batches and LoRA dropout 0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distilled", type=Path, required=True, help="A folder written by `fslm distill`.")
    parser.add_argument("--examples", type=int, default=128, help="Use the first shards holding this many examples.")
    parser.add_argument("--reference", default=REFERENCE_COMMIT, help="Commit whose `fslm train` is the baseline.")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--stages", default="interpret,recall,reason,answer")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "fslm-bench-train")
    parser.add_argument("--dtypes", help="Compare this checkout in these dtypes (comma-separated) instead.")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON only.")
    return parser.parse_args(argv)


def subset(source: Path, examples: int, target: Path) -> int:
    """A distillation folder with the first shards of ``source`` that hold ``examples`` examples."""
    from datasets import load_from_disk

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    shutil.copy(source / "manifest.json", target / "manifest.json")
    held = 0
    for shard in sorted(source.glob("shard-*")):
        if held >= examples:
            break
        shutil.copytree(shard, target / shard.name)
        held += len(set(load_from_disk(str(shard))["example_id"]))
    return held


def run_side(name: str, pythonpath: Path | None, data: Path, args, dtype: str | None = None) -> dict:
    """`fslm train` in a process of its own; its per-stage throughput, wall time and peak RSS."""
    output = args.work_dir / f"trained-{name}"
    shutil.rmtree(output, ignore_errors=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    command = [
        sys.executable, "-m", "fslm_core.cli", "train", str(data), "--output", str(output),
        "--epochs", str(args.epochs), "--stages", args.stages, "--eval-fraction", "0", "--json",
    ] + (["--dtype", dtype] if dtype else [])
    # Run from the work folder: `python -m` puts the current folder first on sys.path, and from the repository
    # root that would import this checkout's fslm_core on both sides.
    source = subprocess.run(
        [sys.executable, "-c", "import fslm_core; print(fslm_core.__file__)"],
        env=env, cwd=args.work_dir, capture_output=True, text=True, check=True,
    ).stdout.strip()
    started = time.perf_counter()
    process = psutil.Popen(
        command, env=env, cwd=args.work_dir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    peak = 0
    while process.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    out = process.stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"{name}: fslm train failed ({process.returncode})")
    result = json.loads(out)
    stages = {
        stage: {"tokens": info["tokens"], "seconds": info["seconds"],
                "tokens_per_s": round(info["tokens"] / info["seconds"], 1),
                "final_loss": round(sum(info["losses"][-5:]) / len(info["losses"][-5:]), 4)}
        for stage, info in result["stages"].items()
    }
    tokens = sum(stage["tokens"] for stage in stages.values())
    seconds = sum(stage["seconds"] for stage in stages.values())
    return {"stages": stages, "tokens_per_s": round(tokens / seconds, 1), "wall_s": round(time.perf_counter() - started, 1),
            "peak_rss_mb": peak >> 20, "fslm_core": source}


def compare_with_reference(data: Path, args) -> dict:
    reference = args.work_dir / "reference-checkout"
    if reference.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(reference)], cwd=ROOT, check=False)
    subprocess.run(["git", "worktree", "add", "--detach", str(reference), args.reference], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        sides = {
            f"reference ({args.reference})": run_side("reference", reference, data, args),
            "this checkout": run_side("current", None, data, args),
        }
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(reference)], cwd=ROOT, check=False)
    return sides


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    data = args.work_dir / "distilled"
    held = subset(args.distilled.resolve(), args.examples, data)
    if args.dtypes:
        sides = {f"this checkout, {dtype}": run_side(dtype, None, data, args, dtype) for dtype in args.dtypes.split(",")}
    else:
        sides = compare_with_reference(data, args)
    names = list(sides)
    figures = {
        "machine": machine(),
        "examples": held,
        "epochs": args.epochs,
        "sides": sides,
        "speedup": round(sides[names[1]]["tokens_per_s"] / sides[names[0]]["tokens_per_s"], 2),
        "memory_ratio": round(sides[names[1]]["peak_rss_mb"] / sides[names[0]]["peak_rss_mb"], 2),
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return figures
    m = figures["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags'])}; torch {m['torch']}, {m['threads']} threads")
    print(f"{held} distilled examples, {args.epochs} epoch(s), stages {args.stages}, each side's default settings")
    stages = args.stages.split(",")
    print(f"{'side':24} " + " ".join(f"{s:>10}" for s in stages) + f" {'all tok/s':>10} {'peak RSS':>9} {'wall':>7}")
    for name, side in sides.items():
        cells = " ".join(f"{side['stages'][s]['tokens_per_s']:>10}" for s in stages)
        print(f"{name:24} {cells} {side['tokens_per_s']:>10} {side['peak_rss_mb']:>6} MB {side['wall_s']:>6}s")
    print(f"speed-up x{figures['speedup']}, peak RSS ratio {figures['memory_ratio']}")
    for name, side in sides.items():
        print(f"{name}: fslm_core from {side['fslm_core']}")
    for name, side in sides.items():
        print(f"{name}: final loss " + ", ".join(f"{s} {side['stages'][s]['final_loss']}" for s in stages))
    return figures


if __name__ == "__main__":
    main()
