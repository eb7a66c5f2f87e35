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


def test_import_layers_hold():
    """The import-linter contracts in pyproject.toml: layers, no cycles, plugins loaded by name only."""
    result = run(tool("lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_importing_fslm_configures_nothing_and_loads_no_model_library():
    code = """
import logging, sys
import structlog
import fslm_core, fslm_core.api, fslm_core.cli, fslm_core.training
assert not structlog.is_configured(), "structlog configured on import"
assert not logging.getLogger().handlers, logging.getLogger().handlers
heavy = sorted({"torch", "transformers", "peft", "datasets", "lm_eval"} & set(sys.modules))
assert not heavy, heavy
"""
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr


def test_library_users_see_no_log_lines_unless_they_configure_logging():
    code = """
from fslm_core import hookimpl, register_plugin
from fslm_core.plugins import get_registry

class Exploding:
    @hookimpl
    def register_routers(self, register):
        raise RuntimeError("boom")

register_plugin(Exploding(), name="exploding")
assert [broken.name for broken in get_registry().broken] == ["exploding"]
"""
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_import_paths_the_docs_promised_before_the_layers_still_work():
    import fslm_core
    from fslm_core import api, harness, training
    from fslm_core.benchmarks import Benchmark
    from fslm_core.evaluation import FslmLM
    from fslm_core.evaluators import Evaluator, normalise
    from fslm_core.formats import MessageFormat
    from fslm_core.plugins import reset_registry
    from fslm_core.routers import Router
    from fslm_core.stage_evaluation import StageEvalJob, evaluate_stages

    assert (Benchmark, Evaluator, normalise, MessageFormat, Router) == (
        api.Benchmark,
        api.Evaluator,
        api.normalise,
        api.MessageFormat,
        api.Router,
    )
    assert (FslmLM, StageEvalJob, evaluate_stages) == (harness.FslmLM, training.StageEvalJob, training.evaluate_stages)
    assert callable(reset_registry)
    for name in fslm_core.__all__:
        assert getattr(fslm_core, name) is not None
