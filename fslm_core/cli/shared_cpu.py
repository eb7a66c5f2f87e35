"""How fslm's OpenMP threads wait, chosen before torch is imported.

OpenMP's default is to spin a while before sleeping. Alone on the machine that
is faster; beside another multi-threaded job the two pools' spinning threads
take each other's cores, and on two cores a run took 4.9 times as long beside
a matrix-product loop and 8.9 times beside a second fslm run, against 1.9 and
1.8 with ``OMP_WAIT_POLICY=PASSIVE``, which costs 1.2 times alone
(``benchmarks/shared_cpu.py``, docs/performance.md). So fslm waits passively
when the machine is already busy as it starts, and keeps the default when it
is quiet. A user's own ``OMP_WAIT_POLICY`` is always kept.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

BUSY_LOAD_PER_CORE = 0.5
"""One-minute load average per core at which another job counts as running (1.0 on two cores)."""


def passive_when_busy(environ: MutableMapping[str, str], load_average: float, cores: int) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` in ``environ`` when the machine is busy and the user chose nothing.

    Returns whether it did. It only works before torch (and with it the OpenMP
    runtime) is loaded, so the command line calls it first thing, and it does
    nothing once torch is imported (``fslm`` called from Python, as the tests do).
    """
    if "torch" in sys.modules:  # its OpenMP runtime has read the policy already
        return False
    if "OMP_WAIT_POLICY" in environ or load_average < BUSY_LOAD_PER_CORE * max(cores, 1):
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def choose_wait_policy() -> bool:
    """:func:`passive_when_busy` for this process and machine."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return False
    # The machine's cores, not this process's affinity: the load average counts the whole machine's jobs.
    return passive_when_busy(os.environ, load, os.cpu_count() or 1)
