"""The repository's own rules, checked with the tests: lint, formatting and the import layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    """The console script installed next to this interpreter (the project's virtualenv)."""
    return str(Path(sys.executable).with_name(name))


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", [("check", "."), ("format", "--check", ".")], ids=["lint", "format"])
def test_ruff_passes(command):
    result = run(tool("ruff"), *command)
    assert result.returncode == 0, result.stdout + result.stderr
