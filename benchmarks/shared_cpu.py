"""fslm beside another multi-threaded CPU job: alone, beside it, and under the thread settings that might help.

The workload: the engine running the untrained fslm-paper stack (four stages, float32, greedy) over
``--prompts`` Alpaca prompts at batch ``--prompts``, in a process of its own; its run time counts from the
loaded stack to the last answer. Neighbours, each started before the workload and stopped after it:

matmul     a torch process multiplying 1024 x 1024 float32 matrices on every core, without pause
           (a stand-in for a compile or any job that keeps an OpenMP pool busy)
engine     a second copy of the workload, started at the same moment (two evaluations at once)

Settings of the measured process (the neighbour keeps the defaults, except for ``engine``, where both
processes take the setting):

default    torch's threads = cores, OpenMP's default wait policy (threads spin a while before sleeping)
passive    ``OMP_WAIT_POLICY=PASSIVE``: waiting threads sleep at once
one-thread ``OMP_NUM_THREADS=1``

On two cores, sharing them fairly makes a run about twice as long as alone; much more than that is the
pools thrashing. Run alone on the machine: the figures are ratios to the alone run of the same invocation.

    HF_HUB_OFFLINE=1 python benchmarks/shared_cpu.py [--prompts 32] [--neighbours matmul,engine]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from machine_info import describe, machine

SETTINGS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one-thread": {"OMP_NUM_THREADS": "1"},
}


def workload(prompts: int) -> None:
    from alpaca_prompts import ALPACA, load_prompts
    from engine_run import timed_engine_run
    from stack_throughput import paper_stack

    stack = paper_stack().model_copy(update={"dtype": "float32"})
    result = timed_engine_run(stack, load_prompts(ALPACA, prompts), prompts)
    print(json.dumps({"run_s": result["run_s"], "tokens": result["generated_tokens"]}))


def matmul_forever() -> None:
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    while True:
        torch.matmul(a, b)


def child(mode: str, prompts: int, extra_env: dict) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **extra_env)
    return subprocess.Popen(
        [sys.executable, __file__, "--child", mode, "--prompts", str(prompts)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def finished(process: subprocess.Popen) -> dict:
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"workload failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run(prompts: int, setting: str, neighbour: str | None) -> dict:
    env = SETTINGS[setting]
    others = []
    if neighbour == "matmul":
        others.append(child("matmul", prompts, {}))
        time.sleep(3)  # its pool is busy before the workload starts
    measured = child("workload", prompts, env)
    if neighbour == "engine":
        others.append(child("workload", prompts, env))
    result = finished(measured)
    for other in others:
        if neighbour == "engine":
            result["neighbour_run_s"] = finished(other)["run_s"]
        else:
            other.kill()
            other.wait()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--neighbours", default="matmul,engine")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "workload":
        workload(args.prompts)
        return
    if args.child == "matmul":
        matmul_forever()
        return
    print(describe(machine()), "|", time.strftime("%Y-%m-%d"), flush=True)
    settings = [s for s in args.settings.split(",") if s]
    rows = []
    alone = {setting: run(args.prompts, setting, None) for setting in settings}
    for setting, result in alone.items():
        rows.append(("alone", setting, result))
    for neighbour in filter(None, args.neighbours.split(",")):
        for setting in settings:
            rows.append((neighbour, setting, run(args.prompts, setting, neighbour)))
    base = alone["default"]["run_s"] if "default" in alone else None
    print(f"{args.prompts} prompts, fslm-paper (4 stages), float32, batch {args.prompts}")
    print(f"{'beside':<8}{'setting':<12}{'run s':>8}{'x alone (default)':>19}{'neighbour run s':>17}")
    for neighbour, setting, result in rows:
        ratio = f"{result['run_s'] / base:.2f}" if base else "-"
        other = f"{result['neighbour_run_s']:.1f}" if "neighbour_run_s" in result else "-"
        print(f"{neighbour:<8}{setting:<12}{result['run_s']:>8.1f}{ratio:>19}{other:>17}", flush=True)


if __name__ == "__main__":
    main()
