"""How long a mistyped ``fslm`` command takes to say what is wrong: as it is, and with torch imported first.

Each command runs as a new process, ``--repeats`` times; the median wall time from start to exit is
reported. The *torch first* side imports torch and transformers before the command runs, which is what
every command paid while the plugin registry imported them: the difference is what building the registry
without torch saves on a command that needs no model.

    HF_HUB_OFFLINE=1 python benchmarks/cli_errors.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from machine_info import describe, machine

COMMANDS = {
    "unknown model": ["run", "--model", "gpt-17", "hi"],
    "eval --limit 0": ["eval", "--tasks", "local_arc_easy", "--limit", "0"],
    "--help": ["--help"],
}
AS_IT_IS = "from fslm_core.cli import main; main()"
TORCH_FIRST = "import torch, transformers; from fslm_core.cli import main; main()"


def wall_time(code: str, argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        check=False,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(describe(machine()))
    print(f"{'command':<18}{'as it is s':>12}{'torch first s':>15}{'ratio':>8}")
    for label, argv in COMMANDS.items():
        now = statistics.median(wall_time(AS_IT_IS, argv) for _ in range(args.repeats))
        before = statistics.median(wall_time(TORCH_FIRST, argv) for _ in range(args.repeats))
        print(f"{label:<18}{now:>12.2f}{before:>15.2f}{before / now:>8.1f}")


if __name__ == "__main__":
    main()
