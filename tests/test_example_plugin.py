"""The example plugin of the author's guide installs with pip, shows up in `fslm plugins`, and works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fslm_core import GenerationSettings, ModelPool, Stack, Stage, register_plugin, run_stack
from fslm_core.plugins import get_registry, reset_registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fslm-plugin-example"
PROVIDED = {
    "backends": "echo",
    "models": "echo",
    "formats": "keywords",
    "routers": "skip-short",
    "decompositions": "keywords-answer",
    "evaluators": "contains-reference",
    "benchmarks": "example_arithmetic",
}


@pytest.fixture
def example_module(monkeypatch):
    """The example plugin imported from its source folder and registered in this process."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import fslm_plugin_example

    reset_registry()
    register_plugin(fslm_plugin_example, name="example")
    yield fslm_plugin_example
    reset_registry()


def fslm_cli(*args, pythonpath):
    env = dict(os.environ, PYTHONPATH=str(pythonpath), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "fslm_core.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.slow  # builds a wheel and starts the CLI twice: over 10 s on a busy machine
def test_pip_installed_example_shows_up_in_fslm_plugins_and_runs(tmp_path):
    source = shutil.copytree(EXAMPLE, tmp_path / "source")  # building writes build/ next to the sources
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr

    listing = json.loads(fslm_cli("plugins", "--json", pythonpath=target).stdout)
    for kind, name in PROVIDED.items():
        row = next(row for row in listing[kind] if row["name"] == name)
        assert (row["plugin"], row["distribution"]) == ("example", "fslm-plugin-example"), kind
    assert listing["broken"] == []

    run = fslm_cli(
        "run",
        "--decomposition",
        "keywords-answer",
        "--model",
        "echo",
        "--json",
        "What is the capital of France?",
        pythonpath=target,
    )
    assert run.returncode == 0, run.stderr
    trace = json.loads(run.stdout)
    assert [message["stage"] for message in trace["messages"]] == ["keywords", "answer"]
    assert trace["messages"][0]["text"] == "User request: What is the capital of France?"
    assert trace["answer"].startswith("User request: What is the capital of France?")


def test_example_router_format_and_evaluator_in_a_stack(example_module):
    stack = Stack(
        name="example",
        router="skip-short",
        stages=[
            Stage(
                name="keywords", model="echo", format="keywords", instruction="Find the keywords.", template="{prompt}"
            ),
            Stage(
                name="answer",
                model="echo",
                reads=("keywords",),
                instruction="Answer.",
                template="{keywords} | {prompt}",
                generation=GenerationSettings(max_new_tokens=12),
            ),
        ],
    )
    long_prompt = "keywords: capital, France ... which city is it"

    long_trace, short_trace = run_stack(stack, [long_prompt, "Hi there"], pool=ModelPool())

    assert long_trace.messages[0].fields == {"keywords": ["capital", "France ... which city is it"]}
    assert long_trace.answer.startswith("Keywords: capital, France ... which city is it |")
    assert [message.stage for message in short_trace.messages] == ["answer"]
    assert short_trace.answer == "(none) | Hi there"
    evaluator = get_registry().evaluator("contains-reference")
    assert evaluator.score(["It is Paris.", "Lyon"], ["paris", "Paris"]) == {"contains_reference": 0.5}


def test_example_benchmark_config_points_at_its_bundled_data(example_module):
    config = get_registry().benchmark("example_arithmetic").build_config()
    data = Path(config["dataset_kwargs"]["data_files"]["test"])
    assert data.is_file() and len(data.read_text().splitlines()) == 5
    assert config["task"] == "example_arithmetic" and config["output_type"] == "generate_until"


@pytest.mark.slow
def test_example_benchmark_loads_in_lm_eval(example_module):
    from lm_eval.tasks import TaskManager, get_task_dict

    config = get_registry().benchmark("example_arithmetic").build_config()
    task = get_task_dict([config], TaskManager())["example_arithmetic"]
    docs = list(task.test_docs())
    assert len(docs) == 5
    assert task.doc_to_text(docs[1]) == "Question: What is 12 + 7?\nAnswer:"
    assert task.doc_to_target(docs[1]) == "19"
