"""Where a warm ``fslm run "…"`` spends its time: imports, loading the stack, running it.

Each repeat is a new process that does what ``fslm run`` does for one prompt, on
the default stack and a warm weights cache, and times three phases:

imports: the command's module and the libraries a stage needs (torch, transformers and
         its Llama model code, peft);
load:    binding the stack: the base model from the weights cache, the tokenizer, adapters,
         the CPU tuning;
run:     ``Stack.run`` on the prompt, every stage one after the other.

The wall time of the whole process is printed beside them; the difference is the
interpreter's own start and exit.

    HF_HUB_OFFLINE=1 python benchmarks/startup_phases.py [--repeats 3] [--stack NAME] [--dtype int8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PROMPT = "What is the capital of France?"


def phases(stack_name: str | None, dtype: str | None) -> dict:
    started = time.perf_counter()
    import peft  # noqa: F401
    import torch  # noqa: F401
    from transformers import LlamaForCausalLM  # noqa: F401

    import fslm_core.cli.run  # noqa: F401
    from fslm_core import resolve_stack
    from fslm_core.runtime import bind_stack

    imported = time.perf_counter()
    stack = resolve_stack(stack_name)
    if dtype:
        stack = stack.model_copy(update={"dtype": dtype})
    bind_stack(stack)
    loaded = time.perf_counter()
    traces = stack.run([PROMPT])
    ran = time.perf_counter()
    return {
        "stack": stack.name,
        "dtype": stack.dtype,
        "imports_s": imported - started,
        "load_s": loaded - imported,
        "run_s": ran - loaded,
        "generated_tokens": sum(m.completion_tokens for m in traces[0].messages),
        "answer": traces[0].answer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stack", help="Stack file, folder or ready-made stack name (default: fslm's default).")
    parser.add_argument("--dtype", help="The stack's dtype setting instead of its own (float32, bfloat16, int8).")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(phases(args.stack, args.dtype)))
        return
    from machine_info import describe, machine

    command = [sys.executable, __file__, "--measure", *(["--stack", args.stack] if args.stack else [])]
    command += ["--dtype", args.dtype] if args.dtype else []
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    rows = []
    for repeat in range(args.repeats + 1):  # the first fills the weights cache if it is empty: not counted
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"measurement failed:\n{done.stderr[-2000:]}")
        if repeat:
            rows.append({**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": wall})
    print(describe(machine()), "|", time.strftime("%Y-%m-%d"))
    print(f"stack {rows[0]['stack']} (dtype {rows[0]['dtype']}), one prompt ({PROMPT!r}), {rows[0]['generated_tokens']} tokens generated, "
          f"median of {len(rows)} warm starts:")
    for key in ("imports_s", "load_s", "run_s", "wall_s"):
        print(f"  {key.removesuffix('_s'):<8}{statistics.median(row[key] for row in rows):6.2f} s   "
              f"({', '.join(f'{row[key]:.2f}' for row in rows)})")


if __name__ == "__main__":
    main()
