"""Shared fixtures: a tiny random Llama for fast engine tests, the embedded SmolLM2 for end-to-end tests,
headless Chromium for tests of pages (``tests/browser.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import browser_page, chromium  # noqa: F401  (fixtures: a page in headless Chromium)

from fslm_core.testing import build_random_adapter, build_tiny_model

SMOLLM2 = "smollm2-135m-instruct"


@pytest.fixture(autouse=True)
def keep_logging_config():
    """`fslm` points structlog at the stderr of the moment (a test's capture); put the previous config back."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A two-layer random Llama with a chat template and a local BPE tokenizer."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model_id(tiny_model_dir):
    return f"hf:{tiny_model_dir}"


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir, tmp_path_factory):
    """Four LoRA adapters with distinct random weights for the tiny model."""
    root = tmp_path_factory.mktemp("tiny-adapters")
    return [build_random_adapter(tiny_model_dir, root / f"adapter{i}", seed=i) for i in range(4)]


@pytest.fixture
def fresh_registry():
    """The plugins reloaded before and after the test: what it registers in-process goes away with it."""
    from fslm_core.plugins import reset_registry

    reset_registry()
    yield
    reset_registry()


@pytest.fixture
def pool():
    """A model pool of the test's own: what it loads is not shared with other tests."""
    from fslm_core import ModelPool

    return ModelPool()


@pytest.fixture
def benchmark_fixture_data(monkeypatch):
    """The benchmark tasks read the few sample rows fslm-plugin-benchmarks ships."""
    from fslm_plugin_benchmarks import DATA_DIR_ENV, FIXTURES_DIR

    monkeypatch.setenv(DATA_DIR_ENV, str(FIXTURES_DIR))
    return FIXTURES_DIR


@pytest.fixture(scope="module")
def distilled_dir(tiny_model_id, tmp_path_factory):
    """Per-stage targets for the tiny Alpaca fixture, written by the tiny model (one copy per test module)."""
    from fslm_core import DistillConfig, distill

    folder = tmp_path_factory.mktemp("train-data") / "distilled"
    distill(
        Path(__file__).parent / "fixtures" / "alpaca_tiny.json",
        folder,
        DistillConfig(max_new_tokens=8, teacher_prompt="per-stage"),
        teacher=tiny_model_id,
        progress=False,
    )
    return folder
