"""Peak memory of loading a bfloat16 checkpoint as ``dtype: int8``: widened whole first, or layer by layer.

Each side is a new process that loads the checkpoint and makes its linear
layers int8 (``fslm_core.runtime.int8_linear.quantize_linear_layers``, the
calibration text included), then reports its peak RSS, the time taken and the
logits of a test sentence:

float32 load:   ``from_pretrained(dtype=float32)``, then quantise (what ``dtype: int8`` did before: the whole
                model exists in float32 first, twice the checkpoint's size);
checkpoint's dtype: ``from_pretrained(dtype="auto")``, then quantise (what it does now: each layer is widened
                to float32 only while it is calibrated and quantised);
bf16 model alone, float32 model alone: the load without quantising, for scale.

The two int8 sides must give the same logits (widening bf16 to float32 is
exact). Without ``--model`` the checkpoint is a registered model (``--registered``,
default the embedded SmolLM2-135M-Instruct) written once in bfloat16 to a
temporary folder; ``--model FOLDER`` takes any local bf16 or fp16 checkpoint
(Phi-3-mini's is 7.6 GB).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/int8_load_memory.py [--registered ID | --model FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SIDES = {
    "float32 model alone": ("float32", False),
    "bf16 model alone": ("auto", False),
    "int8 from a float32 load": ("float32", True),
    "int8 from the checkpoint's dtype": ("auto", True),
}
TEST_TEXT = "The capital of France is"


def memory_status() -> dict[str, int]:
    """This process's memory counters from ``/proc/self/status``, in kB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmHWM", "RssAnon"}:
            fields[name] = int(value.split()[0])
    return fields


class AnonymousPeak:
    """The largest anonymous resident memory seen, sampled every 20 ms (the kernel keeps no peak of it).

    Anonymous memory is what the process itself allocated; the rest of its
    resident memory is file pages (a memory-mapped checkpoint), which the
    kernel can drop and read again under memory pressure.
    """

    def __init__(self) -> None:
        self.peak_kb = 0
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            self.peak_kb = max(self.peak_kb, memory_status()["RssAnon"])
            time.sleep(0.02)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        self.peak_kb = max(self.peak_kb, memory_status()["RssAnon"])
        return self.peak_kb / 1024


def measure(folder: str, dtype: str, quantize: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fslm_core.runtime.int8_linear import CALIBRATION_TEXT, quantize_linear_layers

    torch.set_num_threads(2)
    anonymous = AnonymousPeak()
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    if quantize:
        quantize_linear_layers(model, tokenizer(CALIBRATION_TEXT, return_tensors="pt").input_ids)
    seconds = time.perf_counter() - started
    anonymous_peak_mb = anonymous.stop()
    with torch.inference_mode():
        logits = model(input_ids=tokenizer(TEST_TEXT, return_tensors="pt").input_ids).logits[0, -1].float()
    return {
        "peak_rss_mb": memory_status()["VmHWM"] / 1024,
        "peak_anonymous_mb": anonymous_peak_mb,
        "seconds": seconds,
        "loaded_dtype": str(model.config.dtype).removeprefix("torch."),
        "logits": logits.tolist(),
    }


def bf16_checkpoint(model_id: str, folder: Path) -> Path:
    """A registered model (its float32 load, from its GGUF file), written in bfloat16 with its tokenizer."""
    import torch
    from safetensors.torch import save_model

    from fslm_core import get_registry

    registry = get_registry()
    spec = registry.model(model_id).model_copy(update={"dtype": "float32", "quantize": "none"})
    backend = registry.backend(spec.backend).load(spec)
    folder.mkdir(parents=True)
    # save_pretrained refuses a model loaded from GGUF: the tensors and the config are written as they are.
    save_model(backend.model.to(torch.bfloat16), str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = backend.model.config.to_dict()
    config.pop("quantization_config", None)
    config["dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    backend.tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="A local bf16 or fp16 checkpoint.")
    parser.add_argument(
        "--registered",
        default="smollm2-135m-instruct",
        help="Without --model: a registered model to write in bf16 first (default: %(default)s).",
    )
    parser.add_argument("--measure", nargs=3, metavar=("FOLDER", "DTYPE", "QUANTIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        folder, dtype, quantize = args.measure
        print(json.dumps(measure(folder, dtype, quantize == "1")))
        return
    from machine_info import describe, machine

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", FSLM_CPU_TUNING="0")
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.model or bf16_checkpoint(args.registered, Path(scratch) / f"{args.registered}-bf16")
        rows = {}
        for side, (dtype, quantize) in SIDES.items():
            command = [sys.executable, __file__, "--measure", str(folder), dtype, "1" if quantize else "0"]
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise SystemExit(f"{side} failed:\n{done.stderr[-2000:]}")
            rows[side] = json.loads(done.stdout.strip().splitlines()[-1])
    print(describe(machine()), "|", time.strftime("%Y-%m-%d"))
    print(f"checkpoint: {args.model or args.registered + ', written in bfloat16'}")
    print(f"{'side':36} {'loaded as':>10} {'peak RSS MB':>12} {'peak anonymous MB':>18} {'seconds':>8}")
    for side, row in rows.items():
        print(
            f"{side:36} {row['loaded_dtype']:>10} {row['peak_rss_mb']:12,.0f} {row['peak_anonymous_mb']:18,.0f}"
            f" {row['seconds']:8.1f}"
        )
    old, new = rows["int8 from a float32 load"], rows["int8 from the checkpoint's dtype"]
    print(
        f"peak ratio, checkpoint's dtype / float32 load: RSS {new['peak_rss_mb'] / old['peak_rss_mb']:.2f},"
        f" anonymous {new['peak_anonymous_mb'] / old['peak_anonymous_mb']:.2f}"
    )
    print(f"int8 logits identical: {old['logits'] == new['logits']}")


if __name__ == "__main__":
    main()
