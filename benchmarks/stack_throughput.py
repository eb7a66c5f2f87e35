"""Throughput of the fslm engine against a naive stack, on the same prompts and settings.

engine:          the fslm-paper stack through ``Stack.run``: one shared SmolLM2
                 base, each stage batched over all prompts (greedy).
engine-untuned:  the same with ``FSLM_CPU_TUNING=0``: PyTorch's own linear
                 kernel and allocator, to show what the batching and caching
                 give apart from the CPU tuning.
naive:           the same four stages as four separately loaded copies of the
                 model, one prompt at a time, one ``model.generate`` call per stage.

Both build every stage input with the same fslm functions and decode greedily
with the same token limits, so they do the same work; the answers are compared.
Each runs in its own process, so peak RSS is its own. Model loading is timed
separately and not counted in prompts/s or tokens/s.

    python benchmarks/stack_throughput.py [--prompts 64] [--batch-size 32]   # about 20 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from alpaca_prompts import ALPACA, load_prompts
from engine_run import timed_engine_run

MODEL = "smollm2-135m-instruct"




def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def paper_stack(model: str = MODEL):
    import fslm_core

    return fslm_core.decomposition("fslm-paper").build(model)


def run_engine(prompts: list[str], batch_size: int) -> dict:
    return timed_engine_run(paper_stack(), prompts, batch_size)


def one_prompt_at_a_time(prompts: list[str], reply) -> dict:
    """The stack's stages for one prompt after another, each stage's input built with fslm's own functions.

    ``reply(stage, messages)`` writes one stage's reply to its chat messages and returns (text, tokens
    generated); the naive stack and the llama.cpp peer (``peers.py``) differ only there.
    """
    from fslm_core import get_registry
    from fslm_core.messages import Message, Trace
    from fslm_core.runtime import stage_input, stage_instruction

    stack = paper_stack()
    formats = {stage.name: get_registry().format(stage.format) for stage in stack.stages}
    started, tokens, answers, first_answer_s = time.perf_counter(), 0, [], None
    for prompt in prompts:
        trace = Trace(stack=stack.name, prompt=prompt)
        for stage in stack.stages:
            messages = [
                {"role": "system", "content": stage_instruction(stage, formats[stage.name])},
                {"role": "user", "content": stage_input(stage, trace, formats)},
            ]
            text, count = reply(stage, messages)
            tokens += count
            trace.messages.append(Message(stage=stage.name, text=text, fields=formats[stage.name].parse(text),
                                          model=MODEL, prompt_tokens=0, completion_tokens=count,
                                          latency_s=0.0, batch_size=1))
        answers.append(trace.messages[-1].text)
        if first_answer_s is None:
            first_answer_s = time.perf_counter() - started
    return {"run_s": time.perf_counter() - started, "generated_tokens": tokens, "answers": answers,
            "first_answer_s": first_answer_s}


def run_naive(prompts: list[str]) -> dict:
    """Four model copies, one prompt and one stage at a time, plain ``generate``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fslm_core import get_registry

    spec = get_registry().model(MODEL)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(spec.source, gguf_file=spec.gguf_file)
    models = {
        stage.name: AutoModelForCausalLM.from_pretrained(spec.source, gguf_file=spec.gguf_file).eval()
        for stage in paper_stack().stages
    }
    load_s = time.perf_counter() - started

    def reply(stage, messages) -> tuple[str, int]:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            output = models[stage.name].generate(
                **inputs, max_new_tokens=stage.generation.max_new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = output[0, inputs["input_ids"].shape[1]:]
        return tokenizer.decode(new, skip_special_tokens=True).strip(), len(new)

    return {"load_s": load_s, **one_prompt_at_a_time(prompts, reply)}


def measure(kind: str, prompts_file: Path, count: int, batch_size: int) -> dict:
    prompts = load_prompts(prompts_file, count)
    result = run_engine(prompts, batch_size) if kind == "engine" else run_naive(prompts)
    result.update(kind=kind, prompts=len(prompts), peak_rss_mb=round(peak_rss_mb(), 1))
    result["prompts_per_s"] = len(prompts) / result["run_s"]
    result["tokens_per_s"] = result["generated_tokens"] / result["run_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--prompts-file", type=Path, default=ALPACA, help="Alpaca-format JSON (instructions without input are used).")
    parser.add_argument("--measure", choices=["engine", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.prompts_file, args.prompts, args.batch_size)))
        return

    runs = {"engine": ("engine", {}), "engine-untuned": ("engine", {"FSLM_CPU_TUNING": "0"}), "naive": ("naive", {})}
    results = {}
    for name, (kind, env) in runs.items():
        completed = subprocess.run(
            [sys.executable, __file__, "--measure", kind, "--prompts", str(args.prompts),
             "--batch-size", str(args.batch_size), "--prompts-file", str(args.prompts_file)],
            capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1", **env),
        )
        if completed.returncode != 0:
            raise SystemExit(f"{name} run failed:\n{completed.stderr[-3000:]}")
        results[name] = json.loads(completed.stdout.strip().splitlines()[-1])
    naive = results["naive"]
    print(f"{args.prompts} prompts, fslm-paper (4 stages) on {MODEL}, greedy, engine batch size {args.batch_size}")
    print(f"{'':<16}{'prompts/s':>11}{'tokens/s':>10}{'gen tokens':>12}{'run s':>9}{'load s':>8}{'peak RSS MB':>13}")
    for name, row in results.items():
        print(f"{name:<16}{row['prompts_per_s']:>11.3f}{row['tokens_per_s']:>10.1f}{row['generated_tokens']:>12}"
              f"{row['run_s']:>9.1f}{row['load_s']:>8.1f}{row['peak_rss_mb']:>13.1f}")
    for name in ("engine", "engine-untuned"):
        row = results[name]
        same = sum(a == b for a, b in zip(row["answers"], naive["answers"]))
        print(f"{name} / naive: prompts/s x{row['prompts_per_s'] / naive['prompts_per_s']:.1f}, "
              f"tokens/s x{row['tokens_per_s'] / naive['tokens_per_s']:.1f}, "
              f"peak RSS x{row['peak_rss_mb'] / naive['peak_rss_mb']:.2f}, "
              f"identical final answers {same}/{len(row['answers'])}")


if __name__ == "__main__":
    main()
