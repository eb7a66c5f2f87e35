"""Training that starts from adapters trained before (``start_from``), on the tiny random model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from fslm_cli import run_fslm

from fslm_core import TrainConfig, train_stack
from fslm_core.errors import InputError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STAGES = ("recall", "answer")
ONE_EPOCH = TrainConfig(
    epochs=1, batch_size=2, learning_rate=3e-2, eval_fraction=0.2, stages=STAGES, evaluators=(), log_every=1
)


def weights(stack_folder: Path, stage: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(stack_folder / "adapters" / stage / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def first(distilled_dir, tiny_model_id, tmp_path_factory):
    """Two stages trained for one epoch from fresh adapters."""
    output = tmp_path_factory.mktemp("first") / "stack"
    train_stack(distilled_dir, output, ONE_EPOCH, model=tiny_model_id, progress=False)
    return output


def test_each_stage_starts_from_the_trained_adapter_instead_of_a_fresh_one(
    first, distilled_dir, tiny_model_id, tmp_path, capsys
):
    # A learning rate of ~0 leaves every weight where it started: the trained adapter, or peft's fresh one.
    standing = ["--epochs", "1", "--batch-size", "2", "--learning-rate", "1e-20", "--stages", ",".join(STAGES)]
    common = ["train", str(distilled_dir), "--model", tiny_model_id, *standing]
    code, _, err = run_fslm(capsys, *common, "--output", str(tmp_path / "warm"), "--start-from", str(first))
    assert code == 0, err
    code, _, err = run_fslm(capsys, *common, "--output", str(tmp_path / "cold"))
    assert code == 0, err
    for stage in STAGES:
        trained, warm, cold = (weights(folder, stage) for folder in (first, tmp_path / "warm", tmp_path / "cold"))
        assert warm.keys() == trained.keys()
        for key, value in trained.items():
            assert torch.allclose(warm[key], value, atol=1e-6), key
            if "lora_B" in key:  # peft starts B at zero; training moved it
                assert value.abs().max() > 1e-4 and cold[key].abs().max() < 1e-12, key


def test_a_resumed_run_must_start_from_the_same_adapters(first, distilled_dir, tiny_model_id, tmp_path):
    output = tmp_path / "second"
    train_stack(distilled_dir, output, ONE_EPOCH, model=tiny_model_id, progress=False, start_from=first)
    changed = tmp_path / "changed"
    shutil.copytree(first, changed)
    (changed / "adapters" / "answer" / "adapter_model.safetensors").write_bytes(
        (first / "adapters" / "recall" / "adapter_model.safetensors").read_bytes()
    )
    with pytest.raises(InputError, match="different training settings \\(changed: start_from\\)"):
        train_stack(distilled_dir, output, ONE_EPOCH, model=tiny_model_id, progress=False, start_from=changed)


def test_an_adapter_that_does_not_fit_is_named_before_training(first, distilled_dir, tiny_model_id, tmp_path):
    with pytest.raises(InputError, match="start_from: .* holds no trained adapter for stage 'reason'"):
        train_stack(
            distilled_dir, tmp_path / "a", ONE_EPOCH, model=tiny_model_id, progress=False, start_from=first,
            stages=("reason",),
        )  # fmt: skip
    with pytest.raises(InputError, match="start_from: stage 'recall'.s adapter in .* has rank 8, this run trains 4"):
        train_stack(distilled_dir, tmp_path / "b", ONE_EPOCH, model=tiny_model_id, progress=False, start_from=first,
                    rank=4)  # fmt: skip
    assert not (tmp_path / "b" / "adapters" / "recall").exists()
    damaged = tmp_path / "damaged"
    shutil.copytree(first, damaged)
    (damaged / "adapters" / "recall" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="start_from: stage 'recall'.s adapter in .* cannot be read"):
        train_stack(distilled_dir, tmp_path / "c", ONE_EPOCH, model=tiny_model_id, progress=False, start_from=damaged)
