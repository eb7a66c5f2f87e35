"""Load on ``fslm serve`` against the offline engine, on the same prompts, stack and greedy decoding.

offline:  what ``fslm run --input`` does, in its own process: load the stack,
          then ``Stack.run`` over every prompt at ``--batch-size``.
served:   ``fslm serve`` in its own process on 127.0.0.1; ``--clients``
          concurrent clients, each sending ``--per-client`` prompts one after
          the other (chat completions, no streaming), all starting together.

Model loading is timed apart and counted in neither throughput. Tokens are
every stage's generated tokens (the ``usage`` the server reports, the traces
offline). Bounded: loopback only, a fixed number of requests, a time limit.

    python benchmarks/serve_load.py [--clients 64] [--per-client 2]   # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from alpaca_prompts import ALPACA, load_prompts
from engine_run import timed_engine_run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))




def offline(stack_name: str | None, prompts: list[str], batch_size: int) -> dict:
    """Runs in a child process (``--measure offline``) so that its peak RSS is its own."""
    import resource

    from fslm_core import resolve_stack

    stack = resolve_stack(stack_name)
    return {
        "stack": stack.name,
        **timed_engine_run(stack, prompts, batch_size),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def ask(url: str, model: str, prompt: str, timeout: float) -> tuple[float, dict]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}], "fslm_trace": False})
    request = urllib.request.Request(
        url + "/v1/chat/completions", body.encode(), {"Content-Type": "application/json"}, method="POST"
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply = json.loads(response.read())
    return time.perf_counter() - started, reply


def served(stack_name: str | None, prompts: list[str], clients: int, max_batch: int, timeout: float) -> dict:
    from serve_process import Server, call

    from fslm_core import resolve_stack

    model = resolve_stack(stack_name).name
    log_dir = Path(os.environ.get("TMPDIR", "/tmp"))
    server = Server([stack_name] if stack_name else [], "--max-batch", str(max_batch), log_dir=log_dir)
    started = time.perf_counter()
    try:
        server.wait_ready(timeout=600)
        load_s = time.perf_counter() - started
        per_client = [prompts[index::clients] for index in range(clients)]
        answers: dict[str, str] = {}
        latencies: list[float] = []
        tokens: list[int] = []
        failures: list[str] = []
        gate = threading.Barrier(clients)
        lock = threading.Lock()

        def client(own: list[str]) -> None:
            gate.wait()
            for prompt in own:
                try:
                    seconds, reply = ask(server.url, model, prompt, timeout)
                except Exception as error:  # noqa: BLE001 - counted and reported
                    with lock:
                        failures.append(f"{type(error).__name__}: {error}")
                    continue
                with lock:
                    latencies.append(seconds)
                    tokens.append(reply["usage"]["completion_tokens"])
                    answers[prompt] = reply["choices"][0]["message"]["content"]

        threads = [threading.Thread(target=client, args=(own,)) for own in per_client]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout)
        run_s = time.perf_counter() - started
        stats = call("GET", server.url + "/fslm/stats")[1]
        rss = peak_rss_of(server.process.pid)
    finally:
        server.stop()
    return {
        "stack": model,
        "load_s": load_s,
        "run_s": run_s,
        "generated_tokens": sum(tokens),
        "answers": [answers.get(prompt) for prompt in prompts],
        "latencies": sorted(latencies),
        "failures": failures,
        "batch_sizes": stats["batch_sizes"],
        "peak_rss_mb": rss,
    }


def peak_rss_of(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], share: float) -> str:
    return f"{values[min(int(share * len(values)), len(values) - 1)]:.1f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", help="Stack to serve (default: the default stack, as `fslm run` picks it).")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--per-client", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="Offline batch size and the server's --max-batch.")
    parser.add_argument("--timeout", type=float, default=1800, help="Seconds any one request may take.")
    parser.add_argument("--prompts-file", type=Path, default=ALPACA)
    parser.add_argument("--measure", choices=["offline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    prompts = load_prompts(args.prompts_file, args.clients * args.per_client)
    if args.measure:
        print(json.dumps(offline(args.stack, prompts, args.batch_size)))
        return

    import torch

    from fslm_core.runtime.devices import cpu_summary

    cpu = cpu_summary()
    print(f"CPU: {cpu['cpu']}, {cpu['cores']} cores, flags {' '.join(cpu['flags'])}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    command = [sys.executable, __file__, "--measure", "offline", "--clients", str(args.clients),
               "--per-client", str(args.per_client), "--batch-size", str(args.batch_size),
               "--prompts-file", str(args.prompts_file)] + (["--stack", args.stack] if args.stack else [])
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if done.returncode != 0:
        raise SystemExit(f"offline run failed:\n{done.stderr[-3000:]}")
    results = {"offline": json.loads(done.stdout.strip().splitlines()[-1])}
    results["served"] = served(args.stack, prompts, args.clients, args.batch_size, args.timeout)

    print(f"{len(prompts)} prompts ({args.clients} clients x {args.per_client}), stack {results['offline']['stack']}, "
          f"greedy, batch {args.batch_size}")
    print(f"{'':<10}{'requests/s':>11}{'tokens/s':>10}{'gen tokens':>12}{'run s':>8}{'load s':>8}"
          f"{'p50 s':>8}{'p99 s':>8}{'peak RSS MB':>13}")
    for name, row in results.items():
        latencies = row.get("latencies") or []
        print(f"{name:<10}{len(prompts) / row['run_s']:>11.3f}{row['generated_tokens'] / row['run_s']:>10.1f}"
              f"{row['generated_tokens']:>12}{row['run_s']:>8.1f}{row['load_s']:>8.1f}"
              f"{percentile(latencies, 0.5):>8}{percentile(latencies, 0.99):>8}{row['peak_rss_mb'] or 0:>13.0f}")
    off, on = results["offline"], results["served"]
    same = sum(a == b for a, b in zip(off["answers"], on["answers"]))
    ratio = (on["generated_tokens"] / on["run_s"]) / (off["generated_tokens"] / off["run_s"])
    print(f"served / offline tokens/s: x{ratio:.2f}; requests answered {len(on['latencies'])}/{len(prompts)}, "
          f"failed {len(on['failures'])}; identical answers {same}/{len(prompts)}")
    print(f"batch sizes formed (size: batches): {on['batch_sizes']}")
    if on["latencies"]:
        print(f"latency mean {statistics.mean(on['latencies']):.1f} s")
    for failure in on["failures"][:5]:
        print(f"failure: {failure}")


if __name__ == "__main__":
    main()
