"""The dtype setting: where users set it, how it reaches the loaded models, what ``auto`` means, bf16 training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fslm_cli import run_fslm
from fslm_plugin_benchmarks import DATA_DIR_ENV, FIXTURES_DIR
from tiny_stacks import two_stage_stack

from fslm_core import ModelPool, ModelSpec, Stack, Stage, TrainConfig, load_stack
from fslm_core.errors import DeclarationError, InputError, StackFileError
from fslm_core.lmeval import FslmLM
from fslm_core.runtime import (
    AUTO_DTYPE_ENV,
    auto_dtype,
    bind_stack,
    choose_auto_dtype,
    default_pool,
    dtype_choice,
    dtype_probe,
    in_dtype,
)
from fslm_core.runtime.packed_linear import pack_linear_layers
from fslm_core.training import load_train_config, train_stack

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALPACA_TINY = Path(__file__).parent / "fixtures" / "alpaca_tiny.json"
PROMPTS = ["Name a major American city", "Name 4 different mammals."]
EPYC_FLAGS = ("avx2", "fma")  # the development machine: no bf16 instructions
SAPPHIRE_RAPIDS_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def loaded_dtypes(pool: ModelPool, source: Path) -> set[torch.dtype]:
    return {backend.model.dtype for backend in pool.loaded() if backend.spec.source == str(source)}


# auto ---------------------------------------------------------------------------------------------------------


def test_auto_takes_bf16_only_where_its_probe_is_faster_on_a_cpu_with_bf16_instructions():
    assert choose_auto_dtype({"float32": 20.0, "bfloat16": 10.0}, SAPPHIRE_RAPIDS_FLAGS) == "bfloat16"
    assert choose_auto_dtype({"float32": 10.0, "bfloat16": 20.0}, SAPPHIRE_RAPIDS_FLAGS) == "float32"
    assert (
        choose_auto_dtype({"float32": 10.0, "bfloat16": 9.5}, SAPPHIRE_RAPIDS_FLAGS) == "float32"
    )  # inside the margin
    assert choose_auto_dtype({"float32": 20.0, "bfloat16": 10.0}, EPYC_FLAGS) == "float32"  # emulated bf16
    assert choose_auto_dtype({"float32": 20.0, "int8": 5.0}, SAPPHIRE_RAPIDS_FLAGS) == "float32"  # never quantises
    assert auto_dtype(device_type="cuda") == "float32"


def test_the_probe_is_measured_once_cached_and_forced_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FSLM_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(AUTO_DTYPE_ENV, raising=False)
    dtype_choice._cached_probe.cache_clear()
    measured = []
    real = dtype_choice.measure_probe
    monkeypatch.setattr(dtype_choice, "measure_probe", lambda: measured.append(1) or real())
    try:
        probe = dtype_probe()
        assert set(probe.step_ms) >= {"float32"} and all(ms > 0 for ms in probe.step_ms.values())
        assert probe.choice == choose_auto_dtype(probe.step_ms, probe.flags)
        (cached,) = (tmp_path / "dtype-probe").glob("*.json")
        assert json.loads(cached.read_text())["choice"] == probe.choice
        dtype_choice._cached_probe.cache_clear()  # a new process reads the file
        assert dtype_probe() == probe and measured == [1]
        monkeypatch.setenv(AUTO_DTYPE_ENV, "bfloat16")
        assert dtype_probe().choice == "bfloat16" and dtype_probe().forced
        assert in_dtype(ModelSpec(id="m", source="/w"), "auto").dtype == "bfloat16"
        monkeypatch.setenv(AUTO_DTYPE_ENV, "int8")
        assert in_dtype(ModelSpec(id="m", source="/w"), "auto").quantize == "int8"
        monkeypatch.setenv(AUTO_DTYPE_ENV, "float16")
        with pytest.raises(InputError, match="FSLM_AUTO_DTYPE: expected one of float32, bfloat16, int8 or probe"):
            dtype_probe()
    finally:
        dtype_choice._cached_probe.cache_clear()


def test_a_spec_takes_the_setting_and_auto_keeps_a_plugin_s_own_choice():
    plain = ModelSpec(id="m", source="/weights")
    assert in_dtype(plain, "auto", auto="float32").dtype == "float32"
    assert in_dtype(plain, "auto", auto="bfloat16").dtype == "bfloat16"
    assert in_dtype(plain, "bfloat16", auto="float32").dtype == "bfloat16"
    chosen_for_memory = ModelSpec(id="phi", source="/weights", dtype="bfloat16")
    assert in_dtype(chosen_for_memory, "auto", auto="float32").dtype == "bfloat16"
    assert in_dtype(chosen_for_memory, "float32", auto="float32").dtype == "float32"
    teacher = ModelSpec(id="teacher", source="/weights", quantize="int8")
    assert in_dtype(teacher, "auto", auto="bfloat16").dtype == "float32"
    with pytest.raises(DeclarationError, match="dtype: model 'teacher' is quantised to int8"):
        in_dtype(teacher, "bfloat16")
    as_int8 = in_dtype(chosen_for_memory, "int8", auto="bfloat16")
    assert (as_int8.dtype, as_int8.quantize) == ("float32", "int8")
    sized = ModelSpec(id="m", source="/weights", parameters=1000)
    assert in_dtype(sized, "int8").memory_estimate_bytes == 1000 < sized.memory_estimate_bytes


# running ------------------------------------------------------------------------------------------------------


def test_a_bfloat16_run_loads_bf16_weights_and_writes_traces(tiny_model_dir, tiny_model_id, tiny_adapters):
    pool = ModelPool()
    traces = two_stage_stack(tiny_model_id, tiny_adapters, dtype="bfloat16").run(PROMPTS, pool=pool)
    assert [[message.stage for message in trace.messages] for trace in traces] == [["facts", "answer"]] * 2
    assert all(message.completion_tokens > 0 for trace in traces for message in trace.messages)
    (backend,) = pool.loaded()
    assert backend.spec.dtype == "bfloat16"
    assert {parameter.dtype for name, parameter in backend.model.named_parameters() if "lora_" not in name} == {
        torch.bfloat16
    }
    # oneDNN's packed float32 kernel would not fit bf16 weights: only the adapters' float32 layers take it.
    linear_dtypes = [module.weight.dtype for module in backend.model.modules() if type(module) is torch.nn.Linear]
    assert torch.bfloat16 in linear_dtypes
    assert pack_linear_layers(backend.model) == linear_dtypes.count(torch.float32)


def test_an_int8_run_puts_the_adapters_on_int8_layers(tiny_model_id, tiny_adapters):
    from peft.tuners.lora import LoraLayer

    from fslm_core.runtime.int8_linear import Int8Linear

    pool = ModelPool()
    traces = two_stage_stack(tiny_model_id, tiny_adapters, dtype="int8").run(PROMPTS, pool=pool)
    assert all(message.completion_tokens > 0 for trace in traces for message in trace.messages)
    (backend,) = pool.loaded()
    assert (backend.spec.dtype, backend.spec.quantize) == ("float32", "int8")
    adapted = [module for module in backend.model.modules() if isinstance(module, LoraLayer)]
    assert adapted and all(isinstance(module.get_base_layer(), Int8Linear) for module in adapted)
    assert len(backend.adapter_names) == 2


def test_an_int8_run_of_a_bfloat16_checkpoint_answers_as_its_float32_copy(tiny_model_dir, tiny_adapters, tmp_path):
    """The bf16 checkpoint is quantised from bf16 layer by layer, never widened whole, and to the same result."""
    import shutil

    from transformers import AutoModelForCausalLM

    stored, widened = tmp_path / "bfloat16", tmp_path / "float32"
    shutil.copytree(tiny_model_dir, stored)
    shutil.copytree(tiny_model_dir, widened)
    narrow = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    narrow.save_pretrained(stored)
    narrow.float().save_pretrained(widened)  # the same values, stored in float32
    answers = {}
    for folder in (stored, widened):
        pool = ModelPool()
        traces = two_stage_stack(f"hf:{folder}", tiny_adapters, dtype="int8").run(PROMPTS, pool=pool)
        (backend,) = pool.loaded()
        assert backend.model.config.dtype == getattr(torch, folder.name)  # loaded as stored, then quantised
        assert {parameter.dtype for parameter in backend.model.parameters()} == {torch.float32}
        answers[folder.name] = [[message.text for message in trace.messages] for trace in traces]
    assert answers["bfloat16"] == answers["float32"]
    assert all(text for texts in answers["bfloat16"] for text in texts)


def test_float32_and_bfloat16_share_no_base_while_stages_of_one_dtype_share_one(tiny_model_id, tiny_adapters):
    pool = ModelPool()
    for dtype in ("float32", "bfloat16"):
        bound = bind_stack(two_stage_stack(tiny_model_id, tiny_adapters, dtype=dtype), pool=pool)
        facts, answer = bound.stages["facts"].backend, bound.stages["answer"].backend
        assert facts is answer and facts.spec.dtype == dtype
    assert len(pool.loaded()) == 2
    assert len({ModelPool.key(backend.spec) for backend in pool.loaded()}) == 2


def test_run_option_overrides_the_stack_s_dtype(tiny_model_dir, tiny_model_id, tiny_adapters):
    pool = ModelPool()
    stack = two_stage_stack(tiny_model_id, tiny_adapters, dtype="bfloat16")
    float32_traces = stack.run(PROMPTS, pool=pool, dtype="float32")
    assert loaded_dtypes(pool, tiny_model_dir) == {torch.float32}
    assert len(float32_traces) == 2 and float32_traces[0].answer is not None


# where users set it -------------------------------------------------------------------------------------------


def test_the_stack_file_keeps_its_dtype_and_fslm_run_loads_it(capsys, tiny_model_dir, tiny_model_id, tmp_path):
    stack = two_stage_stack(tiny_model_id, [None, None], dtype="bfloat16")
    folder = tmp_path / "bf16-stack"
    stack.save(folder)
    assert "dtype: bfloat16" in (folder / "stack.yaml").read_text()
    assert load_stack(folder).dtype == "bfloat16"
    assert "dtype:" not in two_stage_stack(tiny_model_id, [None, None]).to_yaml()  # auto, the default, is not written

    code, out, err = run_fslm(capsys, "run", "--stack", str(folder), "--answers-only", "Name a city.")
    assert code == 0, err
    assert torch.bfloat16 in loaded_dtypes(default_pool, tiny_model_dir)
    # --dtype overrides the file.
    code, out, err = run_fslm(capsys, "run", "--stack", str(folder), "--dtype", "float32", "--json", "Name a city.")
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["answer"] is not None
    assert torch.float32 in loaded_dtypes(default_pool, tiny_model_dir)


def test_lm_eval_model_args_dtype_reaches_the_model(tiny_model_dir, tiny_model_id):
    lm = FslmLM.create_from_arg_string(f"model={tiny_model_id},dtype=bfloat16", {"batch_size": 2})
    assert lm.stack.dtype == "bfloat16"
    assert lm.final.backend.model.dtype == torch.bfloat16


def test_fslm_eval_dtype_scores_in_bfloat16(capsys, monkeypatch, tiny_model_dir, tiny_model_id, tmp_path):
    monkeypatch.setenv(DATA_DIR_ENV, str(FIXTURES_DIR))
    output = tmp_path / "eval"
    code, out, err = run_fslm(
        capsys,
        "eval",
        "--model",
        tiny_model_id,
        "--tasks",
        "local_arc_easy",
        "--limit",
        "2",
        "--num-fewshot",
        "0",
        "--bootstrap-iters",
        "0",
        "--dtype",
        "bfloat16",
        "--output",
        str(output),
    )
    assert code == 0, err
    report = json.loads((output / "results.json").read_text())
    assert report["settings"]["dtype"] == "bfloat16"
    assert torch.bfloat16 in loaded_dtypes(default_pool, tiny_model_dir)
    scores = report["tasks"]["local_arc_easy"]["stack"]["results"]["results"]["local_arc_easy"]
    assert 0.0 <= scores["acc_norm,none"] <= 1.0


# bad values ---------------------------------------------------------------------------------------------------


def test_a_bad_dtype_is_an_error_naming_its_field(capsys, tiny_model_id, tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        Stack(name="s", dtype="float16", stages=[Stage(name="a", model="m", instruction="Answer.")])
    stack_file = tmp_path / "stack.yaml"
    stack_file.write_text("name: s\ndtype: half\nstages:\n- {name: a, model: m, instruction: Answer.}\n")
    expected = r"stack.yaml: dtype: Input should be 'auto', 'float32', 'bfloat16' or 'int8'"
    with pytest.raises(StackFileError, match=expected):
        load_stack(stack_file)
    stack = two_stage_stack(tiny_model_id, [None, None])
    with pytest.raises(InputError, match=r"^dtype: expected one of auto, float32, bfloat16, int8, got 'half'"):
        stack.run(PROMPTS, dtype="half")
    expected = r"^model_args.dtype: expected one of auto, float32, bfloat16, int8, got 'fp16'"
    with pytest.raises(InputError, match=expected):
        FslmLM(model=tiny_model_id, dtype="fp16")
    with pytest.raises(InputError, match=r"training settings: dtype: Input should be"):
        load_train_config(overrides={"dtype": "half"})
    code, _, err = run_fslm(capsys, "run", "--dtype", "half", "hello")
    assert code == 2 and "Invalid value for '--dtype'" in err


# training -----------------------------------------------------------------------------------------------------


def test_bfloat16_training_keeps_lora_weights_in_float32_and_saves_adapters(
    capsys, distilled_dir, tiny_model_id, tmp_path
):
    config = TrainConfig(
        epochs=1, batch_size=2, learning_rate=3e-2, eval_fraction=0.2, stages=("interpret", "answer"), dtype="bfloat16"
    )
    pool = ModelPool()
    lora_dtypes: set[torch.dtype] = set()

    def on_step(step) -> None:
        (backend,) = pool.loaded()
        lora_dtypes.update(p.dtype for name, p in backend.model.named_parameters() if "lora_" in name)

    output = tmp_path / "trained"
    result = train_stack(distilled_dir, output, config, model=tiny_model_id, progress=False, pool=pool, on_step=on_step)
    assert lora_dtypes == {torch.float32}
    (backend,) = pool.loaded()
    assert backend.model.dtype == torch.bfloat16
    for name in ("interpret", "answer"):
        stage = result.stages[name]
        assert stage.steps == 3 and all(loss == loss and loss > 0 for loss in stage.losses)  # no NaN
        assert (output / "adapters" / name / "adapter_model.safetensors").is_file()
    assert set(result.evaluation) == {"interpret", "answer"}

    # A rerun resumes (nothing left to do); the same folder in float32 is another run.
    again = train_stack(distilled_dir, output, config, model=tiny_model_id, progress=False, pool=ModelPool())
    assert all(stage.already_trained for stage in again.stages.values())
    code, _, err = run_fslm(
        capsys,
        "train",
        str(distilled_dir),
        "--model",
        tiny_model_id,
        "--output",
        str(output),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--learning-rate",
        "0.03",
        "--eval-fraction",
        "0.2",
        "--stages",
        "interpret,answer",
        "--dtype",
        "float32",
    )
    assert code == 1 and "different training settings (changed: dtype)" in err


def test_int8_training_trains_adapters_on_the_int8_base_and_is_a_run_of_its_own(distilled_dir, tiny_model_id, tmp_path):
    from fslm_core.runtime.int8_linear import Int8Linear

    config = TrainConfig(
        epochs=1, batch_size=2, learning_rate=3e-2, eval_fraction=0.2, stages=("answer",), dtype="int8"
    )
    pool = ModelPool()
    output = tmp_path / "trained"
    result = train_stack(distilled_dir, output, config, model=tiny_model_id, progress=False, pool=pool)
    (backend,) = pool.loaded()
    assert any(isinstance(module, Int8Linear) for module in backend.model.modules())
    stage = result.stages["answer"]
    assert stage.steps == 3 and all(loss == loss and loss > 0 for loss in stage.losses)
    assert (output / "adapters" / "answer" / "adapter_model.safetensors").is_file()
    with pytest.raises(InputError, match=r"changed: dtype"):
        train_stack(
            distilled_dir, output, config.model_copy(update={"dtype": "float32"}), model=tiny_model_id, progress=False
        )
