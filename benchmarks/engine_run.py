"""One timed engine run, as ``fslm run --input`` does it: load the stack, then run it over every prompt."""

from __future__ import annotations

import time


def timed_engine_run(stack, prompts: list[str], batch_size: int) -> dict:
    """Load time and run time apart, every stage's generated tokens, and the answers."""
    from fslm_core import ModelPool
    from fslm_core.runtime import bind_stack

    pool = ModelPool()
    started = time.perf_counter()
    bind_stack(stack, pool=pool)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    traces = stack.run(prompts, batch_size=batch_size, pool=pool)
    run_s = time.perf_counter() - started
    tokens = sum(m.completion_tokens for t in traces for m in t.messages)
    return {"load_s": load_s, "run_s": run_s, "generated_tokens": tokens, "answers": [t.answer for t in traces]}
