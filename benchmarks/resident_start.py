"""`fslm run "What is the capital of France?"` from a new process: cold, warm and resident, side by side.

cold:      an empty weights cache (the GGUF file is de-quantised and cached first), ``--local``
warm:      the cache filled by the cold run, ``--local`` (imports torch and loads the model every time)
resident:  the same command while ``fslm serve`` runs (started first, on a free port; its load is not counted),
           answered through it (``--server``), its models already loaded

Each is timed from the process's start to its first stage's message on stdout and to its exit; the answers
are printed so that they can be compared. Run alone on the machine.

    HF_HUB_OFFLINE=1 python benchmarks/resident_start.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from machine_info import describe, machine

PROMPT = "What is the capital of France?"
FSLM = Path(sys.executable).parent / "fslm"


def timed_run(arguments: list[str], env: dict) -> dict:
    """Seconds to the first stage's line on stdout and to exit, and the answer line."""
    started = time.perf_counter()
    process = subprocess.Popen([str(FSLM), "run", *arguments, PROMPT], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    first, answer = None, None
    for line in process.stdout:
        if first is None and line.startswith("[1]"):
            first = time.perf_counter() - started
        if line.startswith("answer:"):
            answer = line.strip()
    process.wait()
    if process.returncode != 0:
        raise SystemExit(f"fslm run {' '.join(arguments)} failed:\n{process.stderr.read()[-2000:]}")
    return {"first_stage_s": first, "exit_s": time.perf_counter() - started, "answer": answer}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if json.loads(response.read()).get("status") == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"fslm serve at {url} not ready after {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="Runs of warm and resident (medians reported).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"cold": [], "warm": [], "resident": []}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, FSLM_CACHE_DIR=cache, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        results["cold"].append(timed_run(["--local"], env))
        for _ in range(args.repeats):
            results["warm"].append(timed_run(["--local"], env))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([str(FSLM), "serve", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(url)
            timed_run(["--server", url], env)  # the server's first request warms its kernels
            for _ in range(args.repeats):
                results["resident"].append(timed_run(["--server", url], env))
        finally:
            server.terminate()
            server.wait(timeout=60)
    summary = {
        kind: {
            "first_stage_s": round(statistics.median(r["first_stage_s"] for r in runs), 2),
            "exit_s": round(statistics.median(r["exit_s"] for r in runs), 2),
            "runs": len(runs),
            "answers": sorted({r["answer"] for r in runs}),
        }
        for kind, runs in results.items()
    }
    info = machine()
    if args.json:
        print(json.dumps({"machine": info, "date": time.strftime("%Y-%m-%d"), "summary": summary}, indent=1))
        return
    print(f"machine: {describe(info)}; {time.strftime('%Y-%m-%d')}")
    print(f"{'start':<10}{'first stage s':>15}{'exit s':>9}{'runs':>6}  answer")
    for kind, row in summary.items():
        print(f"{kind:<10}{row['first_stage_s']:>15.2f}{row['exit_s']:>9.2f}{row['runs']:>6}  {' | '.join(row['answers'])}")


if __name__ == "__main__":
    main()
