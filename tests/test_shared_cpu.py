"""fslm's OpenMP wait policy: passive when the machine is busy as the command starts, the default otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fslm_core.cli.shared_cpu import passive_when_busy

# A fresh interpreter, so that torch is not loaded yet; the load average is given, not read.
FRESH_START = """
import os, sys
os.environ.pop("OMP_WAIT_POLICY", None)
{user}
os.getloadavg = lambda: ({load}, {load}, {load})
from fslm_core.cli import main
try:
    main(["plugins", "--help"])  # the group runs before the command's help
except SystemExit:
    pass
assert "torch" not in sys.modules
print(os.environ.get("OMP_WAIT_POLICY", "unset"))
"""


def wait_policy_at_start(load: float, user: str = "") -> str:
    code = FRESH_START.format(load=load, user=user)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("load", "user", "expected"),
    [
        (4.0, "", "PASSIVE"),  # another job keeps both cores busy
        (0.1, "", "unset"),  # quiet machine: OpenMP's faster default
        (4.0, "os.environ['OMP_WAIT_POLICY'] = 'ACTIVE'", "ACTIVE"),  # the user's choice is kept
    ],
)
def test_the_command_line_chooses_the_wait_policy_before_torch_loads(load, user, expected):
    assert wait_policy_at_start(load, user) == expected


def test_nothing_changes_once_torch_is_loaded():
    import torch  # noqa: F401  (loaded, as in any process that has run a model)

    environ: dict[str, str] = {}
    assert not passive_when_busy(environ, load_average=8.0, cores=2)
    assert environ == {}
