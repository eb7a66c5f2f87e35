"""A prefill pass and a decoding step of the real model, per dtype, with and without two bf16 fixes, side by side.

The model is SmolLM2-135M-Instruct with the trained ``smollm2-paper`` stack's four adapters attached (what
``fslm run`` computes), loaded once per dtype. Each variant is timed in turn, round after round, medians kept:

  shipped:  the engine's CPU tuning as it is (the head reads a contiguous input; bf16 decoding steps take
            fslm's two-product attention, ``fslm_core/runtime/step_attention.py``)
  before:   the same model with both undone (transformers' strided head input, SDPA's fused kernel)

prefill: one pass over ``--rows`` prompts of ``--prompt-tokens`` tokens (the last position's logits only).
step:    one decoding step of ``--rows`` rows on a ``--cache``-token cache (the engine's reserved cache).

    HF_HUB_OFFLINE=1 python benchmarks/decode_step.py [--dtypes float32,bfloat16] [--rows 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from decode_cache import context_cache
from machine_info import describe, machine


def variants(model):
    """(name, apply) pairs that switch ``model`` between the shipped tuning and the state before it."""
    from fslm_core.runtime.step_attention import NAME

    head = model.get_output_embeddings()
    shipped_hooks = dict(head._forward_pre_hooks)
    configs = {id(c): c for c in (model.config, model.config.get_text_config(decoder=True))}.values()
    shipped_attention = [c._attn_implementation for c in configs]

    def shipped():
        head._forward_pre_hooks.update(shipped_hooks)
        for config, name in zip(configs, shipped_attention):
            config._attn_implementation = name

    def before():
        head._forward_pre_hooks.clear()
        for config in configs:
            config._attn_implementation = "sdpa" if config._attn_implementation == NAME else config._attn_implementation

    return [("shipped", shipped), ("before", before)]


def timers(model, rows: int, prompt_tokens: int, cache: int):
    import torch
    from transformers import DynamicCache

    from fslm_core.runtime.decoding import cache_keyword

    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(100, 10_000, (rows, prompt_tokens), generator=generator)
    context = torch.randint(100, 10_000, (rows, cache), generator=generator)
    step = torch.randint(100, 10_000, (rows, 1), generator=generator)
    keyword = cache_keyword(model)
    reserved = context_cache(model, context)
    mask = torch.ones((rows, cache + 1), dtype=torch.long)
    positions = torch.full((rows, 1), cache)

    def prefill() -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=prompts, use_cache=True, logits_to_keep=1, **{keyword: DynamicCache()})
        return time.perf_counter() - started

    def one_step() -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=step, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                  **{keyword: reserved})
        elapsed = time.perf_counter() - started
        reserved.crop(-1)  # back to the context alone, for the next step
        return elapsed

    return prefill, one_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--cache", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from fslm_core import get_registry, load_stack
    from fslm_core.runtime import bind_stack

    info = machine()
    results = []
    stack = load_stack(get_registry().named_stack("smollm2-paper").folder)
    for dtype in args.dtypes.split(","):
        bound = bind_stack(stack.model_copy(update={"dtype": dtype}))
        backend = next(iter(bound.stages.values())).backend
        names = list(backend.adapter_names.values())
        model = backend.model
        model.base_model.set_adapter(names[0])  # one adapter active, as a stage's rows run
        prefill, one_step = timers(model, args.rows, args.prompt_tokens, args.cache)
        times: dict[tuple[str, str], list[float]] = {}
        switches = variants(model)  # read once, while the model is as shipped
        for _, apply in switches:
            apply(), prefill(), one_step()  # warm-up of each variant's kernels
        for _ in range(args.rounds):
            for name, apply in switches:
                apply()
                times.setdefault((name, "prefill"), []).append(prefill())
                times.setdefault((name, "step"), []).append(one_step())
        switches[0][1]()
        for (name, part), values in times.items():
            results.append({"dtype": dtype, "variant": name, "part": part, "ms": statistics.median(values) * 1000})
        del bound, backend, model
        from fslm_core.runtime import default_pool

        default_pool.clear()
    if args.json:
        print(json.dumps({"machine": info, "date": time.strftime("%Y-%m-%d"), "results": results}, indent=1))
        return
    print(f"machine: {describe(info)}; {time.strftime('%Y-%m-%d')}")
    print(f"rows {args.rows}, prompt {args.prompt_tokens} tokens, cache {args.cache}, medians of {args.rounds} rounds")
    print(f"{'dtype':<10}{'part':<9}{'before ms':>11}{'shipped ms':>12}{'ratio':>8}")
    for dtype in args.dtypes.split(","):
        for part in ("prefill", "step"):
            row = {r["variant"]: r["ms"] for r in results if r["dtype"] == dtype and r["part"] == part}
            print(f"{dtype:<10}{part:<9}{row['before']:>11.1f}{row['shipped']:>12.1f}{row['before'] / row['shipped']:>8.2f}")


if __name__ == "__main__":
    main()
