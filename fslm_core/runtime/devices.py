"""Where models run: the GPU when there is one, else the CPU; and what the CPU offers (its flags of note)."""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def default_device() -> torch.device:
    """The device models are loaded on and trained on."""
    import torch  # on first use: importing fslm_core does not import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


CPU_FLAGS_OF_NOTE = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
"""The instruction sets that decide how fast fslm's float32, int8 and bf16 kernels run."""


def cpu_summary() -> dict:
    """The CPU model, its core count and which of :data:`CPU_FLAGS_OF_NOTE` it has (what figures depend on)."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "flags": [flag for flag in CPU_FLAGS_OF_NOTE if flag in flags]}


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags of bf16 matrix instructions: oneDNN then computes bf16 products natively instead of emulating them."""


def has_native_bf16(flags: Iterable[str]) -> bool:
    return any(flag in NATIVE_BF16_FLAGS for flag in flags)


@functools.cache
def machine_cpu_flags() -> tuple[str, ...]:
    """This machine's CPU flags of note, read once: ``auto`` is decided for every model a process loads."""
    return tuple(cpu_summary()["flags"])
