"""What fslm's CPU tuning (``fslm_core.kernels``) gives SmolLM2-135M-Instruct, side by side.

Four settings, each in its own process (the allocator setting cannot be undone
inside one), on the same random token ids:

    default:        PyTorch's float32 linear kernel (MKL) and glibc's allocator defaults
    packed:         oneDNN-packed linear layers
    allocator:      freed memory kept for reuse
    both:           what the transformers backend does on a CPU

Measured: prefill tokens/s (chunks of rows x tokens, no cache before) and the
time of one decode step of a batch on a cache of the given length. Each figure
is the median of the repeats.

    python benchmarks/cpu_kernels.py [--rows 8] [--tokens 200] [--decode-rows 32] [--cache 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODEL = "smollm2-135m-instruct"
SETTINGS = {"default": (False, False), "packed": (True, False), "allocator": (False, True), "both": (True, True)}


def measure(setting: str, rows: int, tokens: int, decode_rows: int, cache: int, repeats: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from fslm_core import get_registry
    from fslm_core.runtime.cpu_tuning import keep_freed_memory
    from fslm_core.runtime.packed_linear import pack_linear_layers

    spec = get_registry().model(MODEL)
    model = AutoModelForCausalLM.from_pretrained(spec.source, gguf_file=spec.gguf_file).eval()
    packed, allocator = SETTINGS[setting]
    if packed:
        pack_linear_layers(model)
    if allocator:
        keep_freed_memory()
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, 10_000, (rows, tokens), generator=generator)
    context = torch.randint(100, 10_000, (decode_rows, cache), generator=generator)
    step = torch.randint(100, 10_000, (decode_rows, 1), generator=generator)

    def prefill() -> float:
        started = time.perf_counter()
        model(input_ids=prompt, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)
        return time.perf_counter() - started

    def decode_step(past) -> float:
        started = time.perf_counter()
        model(input_ids=step, past_key_values=past, use_cache=True, logits_to_keep=1)
        elapsed = time.perf_counter() - started
        past.crop(-1)  # the next repeat sees the same cache length
        return elapsed

    with torch.inference_mode():
        prefill()
        prefill_s = statistics.median(prefill() for _ in range(repeats))
        past = DynamicCache()
        model(input_ids=context, past_key_values=past, use_cache=True, logits_to_keep=1)
        decode_step(past)
        step_s = statistics.median(decode_step(past) for _ in range(repeats))
    return {"setting": setting, "prefill_tokens_per_s": rows * tokens / prefill_s, "decode_step_ms": step_s * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--decode-rows", type=int, default=32)
    parser.add_argument("--cache", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--measure", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = (args.rows, args.tokens, args.decode_rows, args.cache, args.repeats)
    if args.measure:
        print(json.dumps(measure(args.measure, *sizes)))
        return
    results = {}
    for setting in SETTINGS:
        completed = subprocess.run(
            [sys.executable, __file__, "--measure", setting, "--rows", str(args.rows), "--tokens", str(args.tokens),
             "--decode-rows", str(args.decode_rows), "--cache", str(args.cache), "--repeats", str(args.repeats)],
            capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"),
        )
        if completed.returncode != 0:
            raise SystemExit(f"{setting} run failed:\n{completed.stderr[-3000:]}")
        results[setting] = json.loads(completed.stdout.strip().splitlines()[-1])
    base = results["default"]
    print(f"{MODEL}: prefill {args.rows} x {args.tokens} tokens; decode step of {args.decode_rows} rows "
          f"on a {args.cache}-token cache; median of {args.repeats}")
    print(f"{'':<11}{'prefill tok/s':>15}{'x':>6}{'decode step ms':>16}{'x':>6}")
    for setting, row in results.items():
        print(f"{setting:<11}{row['prefill_tokens_per_s']:>15.0f}"
              f"{row['prefill_tokens_per_s'] / base['prefill_tokens_per_s']:>6.2f}"
              f"{row['decode_step_ms']:>16.1f}{base['decode_step_ms'] / row['decode_step_ms']:>6.2f}")


if __name__ == "__main__":
    main()
