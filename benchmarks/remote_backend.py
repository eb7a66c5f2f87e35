"""The remote backend's own cost: one four-stage workload three ways, in one run, on one machine.

local:    the trained ``smollm2-paper`` stack on fslm's engine (float32), ``--prompts`` prompts at batch 64.
remote:   the same stack exported (``fslm export --to llama.cpp``) and run through the remote backend
          against ``llama-server`` (64 slots, its LoRA adapters, the embedded Q4_1 GGUF base).
direct:   ``llama-server`` driven directly by a minimal client: per stage, the prompts the remote run
          sent (the same token ids), all in flight at once, nothing else. remote / direct is the backend's
          overhead (tokenising, templating, threads, parsing); local / remote compares two runtimes.

The server runs alone between the sides (it is started before ``remote`` and idle during ``local``).
Greedy decoding throughout; generated tokens are counted from each side's own reports.

    python benchmarks/remote_backend.py [--prompts 64] [--port 8097]   # a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alpaca_prompts import ALPACA, load_prompts
from engine_run import timed_engine_run
from llama_server import build_server, export_stack, start_server
from machine_info import describe, machine


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url + "/completion", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as answer:
        return json.loads(answer.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--port", type=int, default=8097)
    args = parser.parse_args()

    from fslm_core import resolve_stack
    from fslm_core.declarations import load_stack, with_dtype
    from fslm_core.runtime import ModelPool, bind_stack, render_stage_prompt

    info = machine()
    print(f"machine: {describe(info)}")
    prompts = load_prompts(ALPACA, args.prompts)
    figures: dict = {"machine": info, "prompts": len(prompts)}

    local = with_dtype(resolve_stack("smollm2-paper"), "float32")
    run = timed_engine_run(local, prompts, batch_size=64)
    figures["local"] = {"run_s": run["run_s"], "tokens": run["generated_tokens"]}
    print(f"local   {run['run_s']:7.1f} s  {run['generated_tokens']} tokens")

    binary = build_server()
    with tempfile.TemporaryDirectory() as folder:
        command = export_stack("smollm2-paper", Path(folder), args.port, binary)
        url = f"http://127.0.0.1:{args.port}"
        server = start_server(command, url)
        try:
            remote = load_stack(Path(folder) / "stack.yaml")
            pool = ModelPool()
            bound = bind_stack(remote, pool=pool)
            started = time.perf_counter()
            traces = remote.run(prompts, batch_size=64, pool=pool)
            remote_s = time.perf_counter() - started
            tokens = sum(m.completion_tokens for t in traces for m in t.messages)
            figures["remote"] = {"run_s": remote_s, "tokens": tokens}
            print(f"remote  {remote_s:7.1f} s  {tokens} tokens")

            # The same requests, stage by stage, with nothing of fslm around them.
            requests = []
            for index, stage in enumerate(remote.stages):
                backend = bound.stages[stage.name].backend
                rows = []
                for trace in traces:
                    partial = trace.model_copy(update={"messages": trace.messages[:index]})
                    rows.append(backend.encode(render_stage_prompt(bound, stage, partial)))
                requests.append(
                    (rows, stage.generation.max_new_tokens, backend.protocol.chosen, backend.protocol.adapter_ids)
                )
            started = time.perf_counter()
            direct_tokens = 0
            with ThreadPoolExecutor(64) as threads:
                for rows, limit, chosen, ids in requests:
                    bodies = [
                        {
                            "prompt": row,
                            "n_predict": limit,
                            "temperature": 0.0,
                            "n_probs": 1,
                            "cache_prompt": True,
                            "lora": [{"id": i, "scale": 1.0 if i == chosen else 0.0} for i in ids],
                        }
                        for row in rows
                    ]
                    direct_tokens += sum(a["tokens_predicted"] for a in threads.map(lambda b: post(url, b), bodies))
            direct_s = time.perf_counter() - started
            figures["direct"] = {"run_s": direct_s, "tokens": direct_tokens}
            print(f"direct  {direct_s:7.1f} s  {direct_tokens} tokens")
        finally:
            server.terminate()
            server.wait(timeout=30)
    figures["remote_over_direct"] = figures["remote"]["run_s"] / figures["direct"]["run_s"]
    figures["local_over_remote"] = figures["local"]["run_s"] / figures["remote"]["run_s"]
    print(
        f"remote / direct: x{figures['remote_over_direct']:.2f}   local / remote: x{figures['local_over_remote']:.2f}"
    )
    print(json.dumps({k: v for k, v in figures.items() if k != "machine"}))


if __name__ == "__main__":
    main()
