"""What every benchmark's figures depend on, printed with them: CPU model, cores, the instruction sets that
matter (avx512_bf16, amx), torch and its threads."""

from __future__ import annotations


def machine() -> dict:
    import torch

    from fslm_core.runtime.devices import cpu_summary

    return {**cpu_summary(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def describe(info: dict) -> str:
    flags = ", ".join(info["flags"]) or "none of note"
    return f"{info['cpu']}, {info['cores']} cores (flags: {flags}), torch {info['torch']}, {info['threads']} threads"
