"""What a result was produced by: the code's commit, the package versions, the dtype and the settings that
change scores. Every eval result records it, so results of different code are never put in one table unnoticed."""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..declarations import Stack
from ..runtime.devices import cpu_summary

PACKAGES = ("fslm-core", "torch", "transformers", "peft", "lm-eval", "datasets")


@functools.cache
def code_commit() -> str | None:
    """The git commit of the fslm checkout this code runs from, ``+dirty`` when it has uncommitted changes
    to tracked files; None for an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "fslm_core", "plugins"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if changed else commit


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_machine(cpu: dict) -> str:
    return f"{cpu['cpu']}, {cpu['cores']} cores ({', '.join(cpu['flags']) or 'no AVX2'})"


def result_machine(result: dict) -> str | None:
    """The machine that produced ``result``, as its provenance records it (None: written before the record)."""
    machine = result.get("provenance", {}).get("machine")
    return describe_machine(machine) if machine else None


def result_machines(results: Iterable[dict]) -> str:
    """The machines that produced ``results``, as their provenance records them; results that predate the
    record are said to, with the machine writing the report named as such."""
    recorded, unrecorded = Counter(), 0
    for result in results:
        machine = result_machine(result)
        if machine:
            recorded[machine] += 1
        else:
            unrecorded += 1
    parts = [f"{name} ({count} results)" if len(recorded) > 1 else name for name, count in recorded.items()]
    if unrecorded:
        parts.append(
            f"not recorded for {unrecorded} results (written before results recorded it; "
            f"this report was written on {describe_machine(cpu_summary())})"
        )
    return "; ".join(parts) or describe_machine(cpu_summary())


UNRECORDED = "not recorded"


def result_commits(results: Iterable[dict]) -> Counter:
    """How many of ``results`` each code commit produced (results that predate the record: ``not recorded``)."""
    return Counter(result.get("provenance", {}).get("commit") or UNRECORDED for result in results)


def commit_line(results: Iterable[dict]) -> str:
    """A report's sentence on the code behind its results: one commit, or a warning naming each."""
    commits = result_commits(results)
    if not commits:
        return "No results yet."
    if len(commits) == 1 and UNRECORDED not in commits:
        (commit,) = commits
        return f"Every result was produced by code commit `{commit}`."
    listed = ", ".join(f"`{commit}` ({count})" for commit, count in commits.most_common())
    return (
        f"**The results come from different or unrecorded code**: {listed}. Delete the stale result files and "
        "rerun to put them on one commit."
    )


def provenance(stack: Stack, plan: Any) -> dict:
    """The code, packages, dtype and scoring settings behind one eval result of ``stack`` under ``plan``."""
    return {
        "commit": code_commit(),
        "machine": cpu_summary(),
        "packages": package_versions(),
        **reusable_settings(stack, plan),
        "batch_size": plan.batch_size,
        "seed": plan.seed,
        "stage_cache": False,
    }


def reusable_settings(stack: Stack, plan: Any) -> dict:
    """What a finished result must share with a plan to be reused by it: what the models compute in, the
    adapters' weights (by sha256, so a stack trained again under its old name is not mistaken for the old one)
    and the scoring settings. The batch size and the seed are left out: they do not change a greedy answer."""
    from ..runtime.dtype_choice import auto_dtype

    return {
        "dtype": stack.dtype,
        "auto_dtype": auto_dtype() if stack.dtype == "auto" else None,
        "adapters": adapter_weights(stack),
        "num_fewshot": plan.num_fewshot,
        "max_gen_toks": plan.max_gen_toks,
    }


def adapter_weights(stack: Stack) -> dict[str, str]:
    """The sha256 of each adapter's weights file, by stage (the fallback's stages under ``fallback.``)."""
    stages = [(stage.name, stage) for stage in stack.stages]
    if stack.fallback is not None and stack.fallback.stack is not None:
        from ..runtime.cascade import fallback_stack

        stages += [(f"fallback.{stage.name}", stage) for stage in fallback_stack(stack).stages]
    from ..training.start_from import WEIGHTS_FILE, adapter_fingerprints

    adapters = {name: Path(stage.adapter) for name, stage in stages if stage.adapter is not None}
    return adapter_fingerprints({name: path for name, path in adapters.items() if (path / WEIGHTS_FILE).is_file()})
