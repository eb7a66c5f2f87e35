"""llama.cpp's ``llama-server`` for the benchmarks: built once per machine, a stack exported to it, started.

``scripts/build-llama-server.sh`` builds it from the pinned llama-cpp-python source (cached outside the
checkout); ``fslm export --to llama.cpp`` writes the stack's GGUF LoRA adapters, a ``serve.sh`` and a stack
file whose stages run on the server.
"""

from __future__ import annotations

import shlex
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_server() -> str:
    """The llama-server binary's path (built on the first call on a machine: about 8 minutes on 2 cores)."""
    built = subprocess.run(
        [str(ROOT / "scripts" / "build-llama-server.sh")], capture_output=True, text=True, check=True
    )
    return built.stdout.strip().splitlines()[-1]


def export_stack(stack: str, folder: Path, port: int, binary: str, slot_tokens: int = 768) -> list[str]:
    """Export ``stack`` for llama.cpp into ``folder``; the command that serves it."""
    from fslm_core.cli import main as fslm

    options = [f"port={port}", f"server={binary}", f"slot_tokens={slot_tokens}"]
    try:
        fslm(["export", stack, "--to", "llama.cpp", str(folder), *(x for o in options for x in ("--option", o))])
    except SystemExit as done:
        if done.code:
            raise
    return shlex.split((folder / "serve.sh").read_text().splitlines()[-1].removeprefix("exec "))


def start_server(command: list[str], url: str) -> subprocess.Popen:
    """Start the server and wait until it answers ``/health``."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("llama-server did not start")


def peak_rss_mb(pid: int) -> float:
    """A running process's peak resident memory (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0
