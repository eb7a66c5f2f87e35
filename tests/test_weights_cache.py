"""The cache of de-quantised GGUF models: entries load as the original, damage is detected, the CLI shows it.

The fast tests write entries from the tiny random model (an entry is whatever
``write_entry`` saved); the slow one loads the embedded SmolLM2 GGUF twice.
"""

from __future__ import annotations

import json
import time

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from fslm_core.cli import cli
from fslm_core.runtime import weights_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FSLM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def written_entry(tiny_model_dir, cache_home):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    entry = weights_cache.models_cache() / weights_cache.entry_name("tiny", "ab" * 32, "float32")
    weights_cache.write_entry(entry, model, tokenizer, tiny_model_dir / "weights.gguf", "ab" * 32)
    return entry, model, tokenizer


def test_an_entry_loads_as_the_model_it_was_written_from(written_entry):
    entry, model, tokenizer = written_entry
    assert weights_cache.usable_entry(entry) == entry
    assert not list(entry.parent.glob(".*"))  # no temporary folder left behind
    loaded = AutoModelForCausalLM.from_pretrained(entry)
    ids = tokenizer("a short test", return_tensors="pt").input_ids
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert AutoTokenizer.from_pretrained(entry)("a short test").input_ids == ids[0].tolist()
    assert "quantization_config" not in json.loads((entry / "config.json").read_text())


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda path: path.write_bytes(path.read_bytes()[:-100]), "bytes, expected"),
        (lambda path: path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1])), "CRC-32"),
        (lambda path: path.unlink(), "missing"),
    ],
    ids=["truncated", "one bit flipped", "file missing"],
)
def test_a_damaged_entry_is_named_removed_and_never_loaded(written_entry, damage, problem):
    entry, _, _ = written_entry
    damage(entry / "model.safetensors")
    assert problem in weights_cache.entry_problem(entry)
    assert weights_cache.usable_entry(entry) is None
    assert not entry.exists()  # removed, so the next load rebuilds it


def test_an_entry_without_its_record_is_not_used(written_entry):
    entry, _, _ = written_entry
    (entry / weights_cache.RECORD).unlink()
    assert weights_cache.usable_entry(entry) is None


def test_the_key_changes_with_content_and_dtype():
    names = {
        weights_cache.entry_name("m", "a" * 64, "float32"),
        weights_cache.entry_name("m", "b" * 64, "float32"),
        weights_cache.entry_name("m", "a" * 64, "bfloat16"),
    }
    assert len(names) == 3


def test_fslm_cache_info_and_clear(written_entry):
    entry, _, _ = written_entry
    runner = CliRunner()
    shown = runner.invoke(cli, ["cache", "info", "--json"])
    assert shown.exit_code == 0, shown.output
    [row] = json.loads(shown.output)["models"]
    assert row["name"] == entry.name and row["problem"] is None and row["bytes"] > 0
    cleared = runner.invoke(cli, ["cache", "clear"])
    assert cleared.exit_code == 0 and "freed" in cleared.output
    assert not entry.exists()
    assert "none cached" in runner.invoke(cli, ["cache", "info"]).output


@pytest.mark.slow
def test_the_embedded_model_loads_from_its_cache_entry_the_second_time(cache_home, report_measurement):
    from fslm_core.plugins import get_registry
    from fslm_core.runtime import with_local_weights

    spec = with_local_weights(get_registry().model("smollm2-135m-instruct"))
    backend_class = get_registry().backend(spec.backend)
    started = time.perf_counter()
    first = backend_class.load(spec)
    first_s = time.perf_counter() - started
    [entry] = weights_cache.cache_entries()
    assert entry.problem is None
    started = time.perf_counter()
    second = backend_class.load(spec)
    second_s = time.perf_counter() - started
    ids = torch.tensor([first.encode("The capital of France is")])
    with torch.no_grad():
        assert torch.equal(first.model(ids).logits, second.model(ids).logits)
    assert first.render_prompt("Be brief.", "Hi") == second.render_prompt("Be brief.", "Hi")
    assert second_s < first_s / 4
    report_measurement(
        f"SmolLM2 GGUF load: {first_s:.1f} s de-quantising (cache entry written), {second_s:.1f} s from the cache"
    )
