"""The fslm engine against its peers on one stack, in one run: the same prompts, stages and greedy decoding.

Sides, each in a process of its own (one after the other, so each peak RSS is its own):

engine-float32:  ``Stack.run`` on the fslm-paper stack over SmolLM2-135M-Instruct, batch 64, float32.
engine-bfloat16: the same in bfloat16 (fast only where the CPU has native bf16; see docs/performance.md).
engine-int8:     the same in ``dtype: int8`` (float32 with int8 linear layers: int8 weights per output channel
                 smoothed by a calibration text, activations quantised per row). Its answers differ from
                 float32's; the table counts how many.
naive:           four separately loaded HF models, one prompt and one stage at a time, ``generate``.
llama-cpp:       llama-cpp-python on the same GGUF file (Q4_1 weights, as shipped), the same four
                 stages one prompt at a time, the prompts tokenised exactly as the engine's.
llama-server:    llama.cpp's batched server, built once per machine from the same pinned source
                 (scripts/build-llama-server.sh), the stack exported to it (``fslm export --to llama.cpp``:
                 its LoRA adapters as GGUF, 64 slots) and run through fslm's remote backend, one request per
                 prompt and stage in flight at once. It needs a stack with adapters: ``--stack smollm2-paper``
                 (the trained stack; the engine sides then run it too). Its peak RSS is the server's.

Every side builds each stage's input from the earlier stages' replies with fslm's own functions, so the
work is the same; the token counts and the share of identical final answers are printed. Reported per
side: generated tokens/s and prompts/s (model loading not counted), load time, first-answer latency (from
the start of the run to the first prompt's final answer: the engine batches stage by stage, so its first
answer comes with the last) and peak RSS.

Two more measurements, for the figures docs/performance.md states against them:

roofline:  the dense matrix-product rate of the CPU per dtype (torch.mm of 2048 x 2048 matrices; bfloat16
           only where the CPU has native bf16; int8: the int8 layers' product of 2048 rows by a 2048 x 2048
           weight),
           against one decoding step of 64 rows on a 256-token cache through the engine's model
           (packed linear layers, the engine's reserved key/value cache), counted as 2 x parameters
           floating-point operations per token (attention over the cache comes on top, uncounted).
memory:    peak RSS of ``fslm run --input`` over the same prompts at its default batch size, for the four-stage
           stack and for one stage on the same model (one loaded base model, same dtype), each a new
           process; the ratio of the two.
startup:   ``fslm run "What is the capital of France?"`` twice, each a new process, on an empty
           weights cache: the first (cold) converts the GGUF file and fills the cache, the second (warm)
           reads it. Wall time from start to exit.

llama-cpp-python has no CPU wheel on PyPI: ``make bench`` compiles it from its source distribution with
portable flags. Without it the llama-cpp side is skipped and says so.

    HF_HUB_OFFLINE=1 python benchmarks/peers.py [--prompts 64] [--batch-size 64] [--skip naive] [--repeats 3]
    HF_HUB_OFFLINE=1 python benchmarks/peers.py --stack smollm2-paper --skip naive,llama-cpp,memory,startup \
        --repeats 3      # the trained stack: the engine in every dtype against llama-server
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alpaca_prompts import ALPACA, load_prompts
from decode_cache import context_cache
from engine_run import timed_engine_run
from machine_info import describe, machine
from stack_throughput import MODEL, one_prompt_at_a_time, paper_stack, run_naive

from fslm_core import get_registry

SIDES = ("engine-float32", "engine-bfloat16", "engine-int8", "naive", "llama-cpp", "llama-server")
UNTRAINED = "fslm-paper"
"""``--stack``'s default: the fslm-paper decomposition over the model, without adapters."""
STARTUP_PROMPT = "What is the capital of France?"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Sides -------------------------------------------------------------------------------------------------


def stack_for(name: str):
    from fslm_core import resolve_stack

    return paper_stack() if name == UNTRAINED else resolve_stack(name)


def run_engine(prompts: list[str], batch_size: int, dtype: str, stack_name: str) -> dict:
    stack = stack_for(stack_name).model_copy(update={"dtype": dtype})
    result = timed_engine_run(stack, prompts, batch_size)
    result["first_answer_s"] = result["run_s"]  # stage-by-stage batches: every answer arrives at the end
    return result


def run_llama_cpp(prompts: list[str]) -> dict:
    """The four stages through llama.cpp, one prompt at a time, prompts tokenised as the engine does."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return {"skipped": "llama-cpp-python is not installed (make bench)"}
    from transformers import AutoTokenizer

    spec = get_registry().model(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(spec.source, gguf_file=spec.gguf_file)
    started = time.perf_counter()
    llm = Llama(model_path=str(Path(spec.source) / spec.gguf_file), n_ctx=4096, n_threads=os.cpu_count(),
                n_batch=512, verbose=False)
    load_s = time.perf_counter() - started

    def reply(stage, messages) -> tuple[str, int]:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        llm.reset()
        done = llm.create_completion(ids, max_tokens=stage.generation.max_new_tokens, temperature=0.0, top_k=1,
                                     seed=0)
        return done["choices"][0]["text"].strip(), done["usage"]["completion_tokens"]

    return {"load_s": load_s, **one_prompt_at_a_time(prompts, reply)}


def run_llama_server(prompts: list[str], stack_name: str, port: int = 8098) -> dict:
    """The stack exported to llama-server and run through the remote backend; the server's own peak RSS."""
    from llama_server import build_server, export_stack, start_server
    from llama_server import peak_rss_mb as server_peak_rss_mb

    from fslm_core import ModelPool
    from fslm_core.declarations import load_stack
    from fslm_core.runtime import bind_stack

    if stack_name == UNTRAINED:
        return {"skipped": "llama-server runs a stack with adapters: give --stack smollm2-paper"}
    binary = build_server()
    with tempfile.TemporaryDirectory() as folder:
        command = export_stack(stack_name, Path(folder), port, binary)
        started = time.perf_counter()
        server = start_server(command, f"http://127.0.0.1:{port}")
        try:
            remote = load_stack(Path(folder) / "stack.yaml")
            pool = ModelPool()
            bind_stack(remote, pool=pool)
            load_s = time.perf_counter() - started
            started = time.perf_counter()
            traces = remote.run(prompts, batch_size=64, pool=pool)
            run_s = time.perf_counter() - started
            rss = server_peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {"load_s": load_s, "run_s": run_s, "first_answer_s": run_s,  # stage by stage, as the engine
            "generated_tokens": sum(m.completion_tokens for t in traces for m in t.messages),
            "answers": [t.answer for t in traces], "server_peak_rss_mb": round(rss, 1)}


def measure(side: str, prompts_file: Path, count: int, batch_size: int, stack_name: str) -> dict:
    prompts = load_prompts(prompts_file, count)
    if side.startswith("engine-"):
        result = run_engine(prompts, batch_size, side.removeprefix("engine-"), stack_name)
    elif side == "naive":
        result = run_naive(prompts)
    elif side == "llama-server":
        result = run_llama_server(prompts, stack_name)
    else:
        result = run_llama_cpp(prompts)
    if "skipped" in result:
        return {"side": side, **result}
    rss = result.pop("server_peak_rss_mb", None) or peak_rss_mb()
    result.update(side=side, prompts=len(prompts), peak_rss_mb=round(rss, 1))
    result["prompts_per_s"] = len(prompts) / result["run_s"]
    result["tokens_per_s"] = result["generated_tokens"] / result["run_s"]
    return result


# Roofline and startup --------------------------------------------------------------------------------


def roofline(dtype: str, rows: int = 64, cache: int = 256, repeats: int = 5) -> dict:
    """Dense matmul GFLOP/s for ``dtype`` against the GFLOP/s of one engine decoding step of ``rows`` rows."""
    import statistics

    import torch

    from fslm_core.runtime import bind_stack
    from fslm_core.runtime.decoding import cache_keyword

    from fslm_core.runtime.int8_linear import Int8Linear, quantize_linear_layers

    size = 2048
    if dtype == "int8":  # the int8 layers' own product (per-row activation scales included) on a square weight
        layer = torch.nn.Linear(size, size, bias=False)
        quantize_linear_layers(torch.nn.Sequential(layer))
        a = torch.randn(size, size)

        def product():
            with torch.inference_mode():
                layer.int8_product(a)
    else:
        a = torch.randn(size, size, dtype=getattr(torch, dtype))
        b = torch.randn(size, size, dtype=getattr(torch, dtype))

        def product():
            torch.mm(a, b)

    product()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        product()
        times.append(time.perf_counter() - started)
    matmul = 2 * size**3 / statistics.median(times) / 1e9

    bound = bind_stack(paper_stack().model_copy(update={"dtype": dtype}))
    model = next(iter(bound.stages.values())).backend.model  # one base, shared by the four stages
    parameters = sum(p.numel() for p in model.parameters())  # tied embeddings once: the head's product counts
    # int8 layers hold no float weight parameter (a tied head keeps its embeddings', counted above).
    parameters += sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, Int8Linear) and "weight" not in m._parameters
    )
    generator = torch.Generator().manual_seed(0)
    context = torch.randint(100, 10_000, (rows, cache), generator=generator)
    step = torch.randint(100, 10_000, (rows, 1), generator=generator)
    keyword = cache_keyword(model)
    reserved = context_cache(model, context)  # the engine's own cache: buffers reserved up front, written in place
    with torch.inference_mode():
        mask = torch.ones((rows, cache + 1), dtype=torch.long)
        positions = torch.full((rows, 1), cache)
        steps = []
        for _ in range(repeats + 1):
            started = time.perf_counter()
            model(
                input_ids=step,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{keyword: reserved},
            )
            steps.append(time.perf_counter() - started)
            reserved.crop(-1)  # back to the context alone, for the next step
    step_s = statistics.median(steps[1:])
    decode = 2 * parameters * rows / step_s / 1e9
    return {"dtype": dtype, "matmul_gflops": matmul, "decode_gflops": decode, "decode_step_ms": step_s * 1000,
            "decode_share": decode / matmul, "rows": rows, "cache": cache}


def startup() -> dict:
    """Cold and warm `fslm run` of one question on an empty cache folder: wall seconds to exit."""
    fslm = Path(sys.executable).parent / "fslm"
    times = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, FSLM_CACHE_DIR=cache, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        for label in ("cold", "warm", "warm again"):
            started = time.perf_counter()
            done = subprocess.run([str(fslm), "run", STARTUP_PROMPT], capture_output=True, text=True, env=env)
            times[label] = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"fslm run failed ({label}):\n{done.stderr[-2000:]}")
            times[f"{label} answer"] = done.stdout.strip().splitlines()[-1].strip()
    return times


ONE_MODEL_STACK = f"""\
fslm_format: 1
name: one-model
description: {MODEL} alone, one stage
stages:
- name: answer
  model: {MODEL}
  instruction: Answer the user's request. Be correct and concise.
  template: '{{prompt}}'
  generation:
    max_new_tokens: 96
"""


def peak_rss_of(command: list[str], env: dict) -> float:
    """Run ``command`` to its end; its peak RSS in MB (the kernel's count for that process alone)."""
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: nothing reads while the process runs
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} failed:\n{errors.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024


def memory(prompts_file: Path, count: int) -> dict:
    """Peak RSS of `fslm run --input` (default batch size): the four-stage stack against one stage, one base."""
    fslm = str(Path(sys.executable).parent / "fslm")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    with tempfile.TemporaryDirectory() as folder:
        prompts = Path(folder, "prompts.txt")
        prompts.write_text("".join(" ".join(p.split()) + "\n" for p in load_prompts(prompts_file, count)))
        one_model = Path(folder, "one-model.yaml")
        one_model.write_text(ONE_MODEL_STACK)
        run = [fslm, "run", "--input", str(prompts), "--answers-only", "--dtype", "float32"]
        figures = {
            "one model": peak_rss_of([*run, "--stack", str(one_model)], env),
            "four-stage stack": peak_rss_of([*run, "--decomposition", "fslm-paper", "--model", MODEL], env),
        }
    figures["ratio"] = figures["four-stage stack"] / figures["one model"]
    return figures


# Driver ------------------------------------------------------------------------------------------------


def child(arguments: list[str]) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, *arguments], capture_output=True, text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"),
    )
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(arguments)} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def report(figures: dict) -> None:
    print(describe(figures["machine"]), "|", figures["date"])
    print(f"{figures['prompts']} Alpaca prompts, {figures['stack']} (4 stages) on {MODEL}, greedy, "
          f"engine batch {figures['batch_size']}")
    if figures["sides"]:
        print(f"{'side':<17}{'tok/s':>8}{'prompts/s':>11}{'tokens':>8}{'load s':>8}{'first answer s':>16}"
              f"{'peak RSS MB':>13}{'same answers':>14}")
    reference = figures["sides"].get("engine-float32", {})
    for side, row in figures["sides"].items():
        if "skipped" in row:
            print(f"{side:<17}skipped: {row['skipped']}")
            continue
        same = sum(a == b for a, b in zip(row["answers"], reference.get("answers", [])))
        print(f"{side:<17}{row['tokens_per_s']:>8.1f}{row['prompts_per_s']:>11.3f}{row['generated_tokens']:>8}"
              f"{row['load_s']:>8.1f}{row['first_answer_s']:>16.1f}{row['peak_rss_mb']:>13.0f}"
              f"{same:>10}/{len(row['answers'])}")
        if len(row.get("tokens_per_s_runs", [])) > 1:
            print(f"{'':<17}tok/s of each run, in order: {', '.join(map(str, row['tokens_per_s_runs']))}")
    for peer_name in ("llama-cpp", "llama-server"):
        peer = figures["sides"].get(peer_name, {})
        for name in ("engine-float32", "engine-bfloat16", "engine-int8"):
            row = figures["sides"].get(name, {})
            if "tokens_per_s" in row and "tokens_per_s" in peer:
                print(f"{name} / {peer_name}: tokens/s x{row['tokens_per_s'] / peer['tokens_per_s']:.2f}, "
                      f"prompts/s x{row['prompts_per_s'] / peer['prompts_per_s']:.2f}")
    for row in figures.get("roofline", []):
        print(f"roofline {row['dtype']}: matmul {row['matmul_gflops']:.0f} GFLOP/s; decode step of {row['rows']} rows "
              f"{row['decode_step_ms']:.1f} ms = {row['decode_gflops']:.0f} GFLOP/s ({row['decode_share']:.0%})")
    if figures.get("memory"):
        m = figures["memory"]
        print(f"fslm run --input, {figures['prompts']} prompts, default batch: peak RSS four-stage stack "
              f"{m['four-stage stack']:.0f} MB, one model {m['one model']:.0f} MB, ratio {m['ratio']:.2f}")
    if figures.get("startup"):
        s = figures["startup"]
        print(f"fslm run, one question: cold {s['cold']:.1f} s, warm {s['warm']:.1f} s, warm again {s['warm again']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--prompts-file", type=Path, default=ALPACA, help="Alpaca-format JSON.")
    parser.add_argument("--stack", default=UNTRAINED, help="The engine sides' and llama-server's stack: "
                        f"{UNTRAINED} (untrained, the default) or a named stack such as smollm2-paper.")
    parser.add_argument("--skip", default="", help="Comma-separated sides or parts to leave out "
                        f"({', '.join(SIDES)}, roofline, memory, startup).")
    parser.add_argument("--repeats", type=int, default=1, help="Rounds of the sides, one after the other; each "
                        "side reports its median run (this VM's speed drifts by a fifth over minutes).")
    parser.add_argument("--json", type=Path, help="Also write every figure (and each answer) here.")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure in ("roofline-float32", "roofline-bfloat16", "roofline-int8"):
        print(json.dumps(roofline(args.measure.removeprefix("roofline-"))))
        return
    if args.measure:
        print(json.dumps(measure(args.measure, args.prompts_file, args.prompts, args.batch_size, args.stack)))
        return
    skip = {item.strip() for item in args.skip.split(",") if item.strip()}
    common = ["--prompts", str(args.prompts), "--batch-size", str(args.batch_size),
              "--prompts-file", str(args.prompts_file), "--stack", args.stack]
    figures = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "prompts": args.prompts,
               "batch_size": args.batch_size, "stack": args.stack, "sides": {}, "roofline": []}
    from fslm_core.runtime.devices import has_native_bf16

    # Emulated bf16 (no avx512_bf16/AMX) is not a dtype anyone computes in here (`auto` never picks it), and it
    # runs several times slower than float32: measured only where the CPU has it.
    native_bf16 = has_native_bf16(figures["machine"]["flags"])
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):  # rounds of every side in turn: a slow spell of the machine hits them all
        for side in SIDES:
            if side == "engine-bfloat16" and not native_bf16 and side not in skip:
                runs[side] = [{"side": side, "skipped": "no native bf16 on this CPU (avx512_bf16, amx_bf16)"}]
            elif side not in skip:
                runs.setdefault(side, []).append(child(["--measure", side, *common]))
    for side, measured in runs.items():
        # The run of median throughput stands for the side; every run's rate is kept beside it.
        ranked = sorted(measured, key=lambda row: row.get("tokens_per_s", 0))
        figures["sides"][side] = {**ranked[len(ranked) // 2], "tokens_per_s_runs": [
            round(row["tokens_per_s"], 1) for row in measured if "tokens_per_s" in row]}
    if "roofline" not in skip:
        dtypes = ("float32", "bfloat16", "int8") if native_bf16 else ("float32", "int8")
        figures["roofline"] = [child(["--measure", f"roofline-{dtype}"]) for dtype in dtypes]
    if "memory" not in skip:
        figures["memory"] = memory(args.prompts_file, args.prompts)
    if "startup" not in skip:
        figures["startup"] = startup()
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
