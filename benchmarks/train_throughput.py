"""Training throughput of one stage: fslm's trainer against plain HF Trainer + peft, in one run.

Both train the same LoRA (same rank, alpha, dropout, target modules) on the
same tokenised examples (the stage's inputs as the engine builds them and its
distilled targets) with the same batch size, epochs, learning rate, schedule,
gradient clipping and seed, on the same loaded base model and thread count.
Throughput is tokens read per second (prompt + target, padding not counted).

Two figures per side:

* loop: the training loop alone (fslm's own timer; Trainer's ``train_runtime``);
* call: the whole call, wall clock: ``train_stack`` (LoRA set-up, encoding,
  checkpointing, saving the adapter and stack) against ``get_peft_model`` +
  ``Trainer(...)`` + ``train()`` + ``save_pretrained``.

Data: the first ``--examples`` usable rows of the Alpaca file, distilled once by
the teacher into ``--work-dir`` (reused on later runs).

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python benchmarks/train_throughput.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca" / "alpaca_5000.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Alpaca-format JSON file.")
    parser.add_argument("--examples", type=int, default=32, help="Training examples (distilled once, then reused).")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="Teacher and student model id.")
    parser.add_argument("--stage", default="answer", help="Stage of fslm-paper to train.")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--teacher-max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (0: torch's default).")
    parser.add_argument("--repeats", type=int, default=1, help="Runs of each side, alternating; the best counts.")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "fslm-bench-train")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON only.")
    return parser.parse_args(argv)


def distilled_data(args, pool):
    from fslm_core import distill, load_distilled

    # One folder per data size: both trainers read every example the folder holds.
    name = f"distilled-{args.model.replace('/', '_').replace(':', '_')}-{args.teacher_max_new_tokens}-{args.examples}"
    folder = args.work_dir / name
    distill(args.data, folder, teacher=args.model, limit=args.examples,
            max_new_tokens=args.teacher_max_new_tokens, pool=pool, progress=sys.stderr.isatty())
    return load_distilled(folder)


def run_fslm(args, data, config, pool, run_index: int) -> dict:
    from fslm_core import train_stack

    output = args.work_dir / f"fslm-stack-{run_index}"
    shutil.rmtree(output, ignore_errors=True)
    started = time.perf_counter()
    result = train_stack(data, output, config, model=args.model, pool=pool, progress=False)
    wall = time.perf_counter() - started
    stage = result.stages[args.stage]
    return {"tokens": stage.tokens, "loop_seconds": stage.seconds, "call_seconds": wall,
            "mean_loss": round(sum(stage.losses) / len(stage.losses), 4)}


def run_trainer(args, backend, encoded, config, lora_config, run_index: int) -> dict:
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from fslm_core.runtime import IGNORE_INDEX

    rows = {
        "input_ids": [list(example.input_ids) for example in encoded],
        "labels": [[IGNORE_INDEX] * example.target_start + list(example.input_ids[example.target_start :])
                   for example in encoded],
    }
    dataset = Dataset.from_dict(rows)
    tokenizer = backend.tokenizer
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "right"  # the usual side for training; the backend pads left for generation
    output = args.work_dir / f"trainer-{run_index}"
    shutil.rmtree(output, ignore_errors=True)
    steps = -(-len(encoded) // config.batch_size) * config.epochs
    # Weights read from a GGUF file are de-quantised to float32 on load, but the model keeps
    # its GGUF quantizer marker, and Trainer refuses to train a model carrying it.
    marker = {name: getattr(backend.model, name, None) for name in ("hf_quantizer", "is_quantized")}
    backend.model.hf_quantizer, backend.model.is_quantized = None, False
    started = time.perf_counter()
    model = get_peft_model(backend.model, lora_config)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(output),
            per_device_train_batch_size=config.batch_size,
            num_train_epochs=config.epochs,
            learning_rate=config.learning_rate,
            lr_scheduler_type="linear",
            warmup_steps=int(config.warmup_ratio * steps),
            weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm,
            seed=config.seed,
            logging_strategy="no",
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
        ),
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX),
    )
    trainer.remove_callback(PrinterCallback)  # it prints the metrics to stdout, which carries this script's output
    metrics = trainer.train().metrics
    model.save_pretrained(str(output / "adapter"))
    wall = time.perf_counter() - started
    tokenizer.padding_side = padding_side
    backend.model = model.unload()
    for name, value in marker.items():
        setattr(backend.model, name, value)
    backend.model.eval()
    tokens = sum(len(example) for example in encoded) * config.epochs
    return {"tokens": tokens, "loop_seconds": metrics["train_runtime"], "call_seconds": wall,
            "mean_loss": round(metrics["train_loss"], 4)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from fslm_core import TrainConfig
    from fslm_core import ModelPool
    from fslm_core.runtime import bind_stack
    from fslm_core.plugins import get_registry
    from fslm_core.runtime import encode_example
    from fslm_core.training import lora_config as _lora_config
    from fslm_core.training import split_examples, stage_pairs

    if args.threads:
        torch.set_num_threads(args.threads)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    pool = ModelPool()  # the teacher, both trainers and the encoding share one loaded base
    data = distilled_data(args, pool)
    config = TrainConfig(
        stages=(args.stage,), epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
        eval_fraction=0.0, evaluators=(), checkpoint_every=10_000,
    )
    stack = get_registry().decomposition(data.decomposition).build(args.model)
    bound = bind_stack(stack, pool=pool)
    backend = bound.stages[args.stage].backend
    train_examples, _ = split_examples(data.examples(), config.eval_fraction, config.max_eval_examples, config.seed)
    encoded = [encode_example(backend, prompt, target, config.max_length)
               for prompt, target in stage_pairs(bound, args.stage, train_examples)]
    lora_config = _lora_config(config, backend)

    fslm_runs, trainer_runs = [], []
    for index in range(args.repeats):
        # Alternate which side goes first, so neither always gets the warmer caches.
        order = ("fslm", "trainer") if index % 2 == 0 else ("trainer", "fslm")
        for side in order:
            if side == "fslm":
                fslm_runs.append(run_fslm(args, data, config, pool, index))
            else:
                trainer_runs.append(run_trainer(args, backend, encoded, config, lora_config, index))

    def best(runs, key):
        run = min(runs, key=lambda r: r[key])
        return round(run["tokens"] / run[key], 1)

    figures = {
        "model": args.model,
        "stage": args.stage,
        "examples": len(encoded),
        "tokens_per_epoch": sum(len(example) for example in encoded),
        "target_tokens_per_epoch": sum(example.target_tokens for example in encoded),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "fslm_loop_tokens_per_s": best(fslm_runs, "loop_seconds"),
        "trainer_loop_tokens_per_s": best(trainer_runs, "loop_seconds"),
        "fslm_call_tokens_per_s": best(fslm_runs, "call_seconds"),
        "trainer_call_tokens_per_s": best(trainer_runs, "call_seconds"),
        "fslm_mean_loss": fslm_runs[-1]["mean_loss"],
        "trainer_mean_loss": trainer_runs[-1]["mean_loss"],
        "fslm_runs": fslm_runs,
        "trainer_runs": trainer_runs,
    }
    figures["speedup_loop"] = round(figures["fslm_loop_tokens_per_s"] / figures["trainer_loop_tokens_per_s"], 2)
    figures["speedup_call"] = round(figures["fslm_call_tokens_per_s"] / figures["trainer_call_tokens_per_s"], 2)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"stage {args.stage!r} of fslm-paper on {args.model}: {len(encoded)} examples, "
              f"{figures['tokens_per_epoch']} tokens/epoch ({figures['target_tokens_per_epoch']} target), "
              f"batch {args.batch_size}, {args.epochs} epoch(s), {figures['threads']} thread(s)")
        print(f"{'':8} {'loop tok/s':>11} {'call tok/s':>11}")
        print(f"{'fslm':8} {figures['fslm_loop_tokens_per_s']:>11} {figures['fslm_call_tokens_per_s']:>11}")
        print(f"{'Trainer':8} {figures['trainer_loop_tokens_per_s']:>11} {figures['trainer_call_tokens_per_s']:>11}")
        for side, runs in (("fslm", fslm_runs), ("Trainer", trainer_runs)):
            print(f"{side} runs, loop seconds: " + ", ".join(f"{run['loop_seconds']:.1f}" for run in runs))
        print(f"fslm / Trainer: loop x{figures['speedup_loop']}, call x{figures['speedup_call']}; "
              f"mean training loss {figures['fslm_mean_loss']} / {figures['trainer_mean_loss']}")
    return figures


if __name__ == "__main__":
    main()
