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


def test_the_plugin_registry_builds_without_loading_a_model_library():
    """Every command builds the registry: one that needs no model (a wrong name, a listing) must not wait for torch."""
    code = """
import sys
from fslm_core.plugins import get_registry
registry = get_registry()
assert "python" in registry.names("tools") and registry.model("smollm2-135m-instruct")
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


def test_one_path_per_module_and_no_old_ones_anywhere_in_the_repository():
    import importlib.util
    import re

    import fslm_core

    old = ("evaluation", "evaluators", "formats", "routers", "benchmarks", "stage_evaluation")
    for name in old:
        assert importlib.util.find_spec(f"fslm_core.{name}") is None, name
    pattern = re.compile(r"fslm_core\.(" + "|".join(old) + r")\b")
    offenders = [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*")
        if path.suffix in (".py", ".md", ".toml", ".yaml")
        and not {".venv", ".git"} & set(path.parts)
        and path.name != "test_code_rules.py"
        and pattern.search(path.read_text(encoding="utf-8", errors="ignore"))
    ]
    assert offenders == []
    assert set(fslm_core.__all__) <= set(vars(fslm_core))


def test_no_module_of_fslm_core_is_over_450_lines():
    long = {
        str(path.relative_to(ROOT)): lines
        for path in (ROOT / "fslm_core").rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 450
    }
    assert long == {}


def test_every_path_the_architecture_page_names_exists():
    import re

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:[\w.]+/)*[\w.]+(?:\.py|\.html|/))`", text))
    named |= {f"{folder}/" for folder in re.findall(r'\["(\w+)/<br/>', text)}
    assert len(named) > 40
    missing = []
    for name in sorted(named):
        where = [ROOT / name, ROOT / "fslm_core" / name, ROOT / "fslm_core" / "runtime" / name]
        where += [folder / name for folder in (ROOT / "fslm_core").iterdir() if folder.is_dir()]
        if not any(path.exists() for path in where):
            missing.append(name)
    assert missing == []


def test_every_hook_in_the_specs_has_a_section_in_the_plugin_guide():
    import inspect
    import re

    from fslm_core.api import hookspecs

    hooks = {
        name for name, function in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(function, "fslm_spec")
    }
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    documented = {hook for heading in re.findall(r"^## .*$", text, re.M) for hook in re.findall(r"`(\w+)`", heading)}
    assert hooks and hooks <= documented, hooks - documented
    assert {registration.hook for registration in hookspecs.REGISTRATIONS.values()} <= hooks
