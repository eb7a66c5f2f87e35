"""Long prompts: an 8k-token prefill against its matrix-product bound, and a four-stage stack on a long prompt.

A prompt of ``--characters`` characters (Alpaca instructions and answers, then a question) is cut by the
engine to SmolLM2-135M-Instruct's 8,192-token context. Three figures, side by side, one process, alone on the
machine:

bound       the prefill's arithmetic (every linear layer on every prompt token, the attention products over
            the causal half, the output layer once) at the rate this CPU reaches on one large matrix product
model       transformers' own forward pass over the same token ids (SDPA, no fslm code): the peer
engine      ``fslm``'s one-stage stack answering the prompt with one new token (fitting, prefill, one step)

then the four stages of ``--stack`` (default the trained ``smollm2-paper``) answering the whole prompt, with
each stage's seconds. Run alone on the machine.

    HF_HUB_OFFLINE=1 python benchmarks/long_prompt.py [--characters 50000] [--dtype float32] [--skip stack]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from alpaca_prompts import ALPACA
from machine_info import describe, machine

MODEL = "smollm2-135m-instruct"
QUESTION = "\n\nQuestion: In one sentence, what is the last instruction above about?"


def long_prompt(characters: int) -> str:
    rows = json.loads(ALPACA.read_text(encoding="utf-8"))
    parts, size = [], 0
    for row in rows:
        text = f"Instruction: {row['instruction'].strip()}\nAnswer: {row['output'].strip()}\n"
        parts.append(text)
        size += len(text)
        if size >= characters - len(QUESTION):
            break
    return "".join(parts)[: characters - len(QUESTION)] + QUESTION


def matmul_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of one square matrix product, the best of ``repeats``."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def prefill_flops(model, tokens: int) -> dict[str, float]:
    """Arithmetic of one prefill of ``tokens`` tokens: linear layers, attention (causal half), output layer."""
    config = model.config.get_text_config(decoder=True)
    output = model.get_output_embeddings()
    linear = sum(
        module.weight.numel()
        for module in model.modules()
        if isinstance(module, torch.nn.Linear) and module is not output
    )
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = config.num_hidden_layers * 2 * 2 * config.num_attention_heads * head_dim * tokens * tokens / 2
    return {
        "linear": 2.0 * linear * tokens,
        "attention": float(attention),
        "output": 2.0 * output.weight.numel(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--characters", type=int, default=50_000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--stack", default="smollm2-paper")
    parser.add_argument("--prefill-tokens", type=int, help="Tokens per prefill pass (default: the engine's "
                        "PREFILL_TOKENS; a large value reads the prompt in one pass, as before segments).")
    parser.add_argument("--skip", default="", help="Comma-separated: model, engine, stack.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    from fslm_core import Stack
    from fslm_core.declarations import GenerationSettings, with_dtype
    from fslm_core.runtime import bind_stack, run_stack
    from fslm_core.runtime.stack_choice import resolve_stack, single_model_stack

    if args.prefill_tokens:
        from fslm_core.runtime import decoding

        decoding.PREFILL_TOKENS = args.prefill_tokens
    info = machine()
    print(describe(info), flush=True)
    prompt = long_prompt(args.characters)
    dtype = getattr(torch, args.dtype)
    one = single_model_stack(MODEL)
    one = with_dtype(
        one.model_copy(
            update={"stages": [one.stages[0].model_copy(update={"generation": GenerationSettings(max_new_tokens=1)})]}
        ),
        args.dtype,
    )
    bound = bind_stack(one)
    backend = bound.stages["answer"].backend
    model = backend.model
    ids = backend.encode(prompt)
    context = backend.max_sequence_length
    ids = ids[-(context - 1) :]
    tokens = len(ids)
    flops = prefill_flops(model, tokens)
    rate = matmul_rate(dtype)
    results: dict = {
        "machine": info,
        "characters": len(prompt),
        "prompt_tokens": tokens,
        "dtype": args.dtype,
        "matmul_gflops": round(rate / 1e9, 1),
        "prefill_tflop": {name: round(value / 1e12, 3) for name, value in flops.items()},
        "bound_s": round(sum(flops.values()) / rate, 2),
    }
    print(
        f"prompt: {len(prompt):,} characters, {tokens:,} tokens after the cut; matrix product "
        f"{rate / 1e9:.0f} GFLOP/s ({args.dtype}); prefill {sum(flops.values()) / 1e12:.2f} TFLOP "
        f"(linear {flops['linear'] / 1e12:.2f}, attention {flops['attention'] / 1e12:.2f}) -> bound "
        f"{results['bound_s']:.1f} s",
        flush=True,
    )
    if "model" not in skip:
        with torch.inference_mode():
            batch = torch.tensor([ids])
            seconds = _timed(lambda: model(input_ids=batch, use_cache=False, logits_to_keep=1))
        results["model_s"] = round(seconds, 2)
        print(
            f"model   (transformers forward, same ids): {seconds:.1f} s = "
            f"{seconds / results['bound_s']:.2f}x the bound",
            flush=True,
        )
    if "engine" not in skip:
        started = time.perf_counter()
        (trace,) = run_stack(one, [prompt])
        seconds = time.perf_counter() - started
        results["engine_s"] = round(seconds, 2)
        results["engine_prompt_tokens"] = trace.messages[0].prompt_tokens
        print(
            f"engine  (one stage, one new token, {trace.messages[0].prompt_tokens:,} prompt tokens): {seconds:.1f} s "
            f"= {seconds / results['bound_s']:.2f}x the bound",
            flush=True,
        )
    if "stack" not in skip:
        stack: Stack = with_dtype(resolve_stack(args.stack), args.dtype)
        bind_stack(stack)  # loading is not timed
        started = time.perf_counter()
        (trace,) = run_stack(stack, [prompt], progress=True)
        seconds = time.perf_counter() - started
        stages = {message.stage: round(message.latency_s, 1) for message in trace.messages}
        results["stack_s"] = round(seconds, 2)
        results["stack_stages_s"] = stages
        results["stack_answer"] = trace.answer
        print(f"stack   ({args.stack}, {len(stack.stages)} stages): {seconds:.1f} s; per stage {stages}", flush=True)
        print(f"        answer: {trace.answer!r}", flush=True)
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        print()


if __name__ == "__main__":
    main()
