"""The stage cache in an evaluation: cold, then warm, then with one stage's adapter changed.

cold:     the stack on the first ``--documents`` ARC-Easy documents of the local slice, with an empty cache.
warm:     the same again, reading what the cold run wrote (a fresh lm-eval model, same loaded base).
changed:  the same with the ``--change`` stage's adapter replaced by a copy whose weights differ slightly:
          the stages before it must come from the cache, it and the stages after it must be recomputed.

Scores must be identical between cold and warm. Model loading is done before any run and not counted.

    python benchmarks/stage_cache_eval.py [--stack smollm2-paper] [--documents 40] [--change reason]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path


def perturbed_copy(adapter: Path, target: Path) -> Path:
    """A copy of a LoRA adapter folder with its B matrices scaled by 1.01: a different adapter, same shape."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter, target)
    weights_file = target / "adapter_model.safetensors"
    weights = load_file(weights_file)
    save_file({name: value * 1.01 if "lora_B" in name else value for name, value in weights.items()}, weights_file)
    return target


def evaluate(stack, cache, documents: int) -> dict:
    from fslm_core.lmeval import EvalSettings, FslmLM, run_task, task_manager

    task = "local_arc_easy"
    lm = FslmLM(stack=stack, batch_size=32, stage_cache=False)
    lm.stage_cache = cache
    settings = EvalSettings(tasks=[task], num_fewshot=0, batch_size="32", log_samples=True, samples={task: list(range(documents))})
    started = time.perf_counter()
    run = run_task(lm, task, task_manager([task]), settings)
    seconds = time.perf_counter() - started
    samples = run.results["samples"][task]
    scores = {sample["doc_id"]: sample["acc_norm"] for sample in samples}
    per_stage: Counter = Counter()
    for document in lm.document_traces(task):
        for trace in document["traces"]:
            for message in trace["messages"]:
                per_stage[(message["stage"], "cached" if message["cached"] else "generated")] += 1
    return {"seconds": seconds, "scores": scores, "per_stage": per_stage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="smollm2-paper")
    parser.add_argument("--documents", type=int, default=40)
    parser.add_argument("--change", default="reason", help="The stage whose adapter is replaced in the third run.")
    args = parser.parse_args()

    import torch

    from fslm_core import resolve_stack
    from fslm_core.runtime import bind_stack
    from fslm_core.runtime.devices import cpu_summary
    from fslm_core.runtime.stage_cache import StageCache

    cpu = cpu_summary()
    print(f"CPU: {cpu['cpu']}, {cpu['cores']} cores, flags {' '.join(cpu['flags'])}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    stack = resolve_stack(args.stack)
    upstream = [stage.name for stage in stack.stages[:-1]]
    if args.change not in upstream:
        raise SystemExit(f"--change: {args.change!r} is not an upstream stage of {stack.name} ({', '.join(upstream)})")
    with tempfile.TemporaryDirectory() as folder:
        changed_adapter = perturbed_copy(stack.stage(args.change).adapter, Path(folder) / "changed-adapter")
        changed = stack.model_copy(update={"stages": tuple(
            stage.model_copy(update={"adapter": changed_adapter}) if stage.name == args.change else stage
            for stage in stack.stages
        )})
        bind_stack(stack)
        bind_stack(changed)  # both adapters attached before timing
        cache = StageCache(Path(folder) / "stages.sqlite")
        runs = {"cold": evaluate(stack, cache, args.documents), "warm": evaluate(stack, cache, args.documents),
                "changed": evaluate(changed, cache, args.documents)}

    print(f"{stack.name} on local_arc_easy, first {args.documents} documents, zero-shot, batch 32")
    print(f"{'run':<9}{'seconds':>9}{'acc_norm':>10}  upstream stage messages (generated / from cache)")
    for name, run in runs.items():
        accuracy = sum(run["scores"].values()) / len(run["scores"])
        stages = ", ".join(
            f"{stage} {run['per_stage'][(stage, 'generated')]}/{run['per_stage'][(stage, 'cached')]}" for stage in upstream
        )
        print(f"{name:<9}{run['seconds']:>9.1f}{accuracy:>10.3f}  {stages}")
    cold, warm = runs["cold"], runs["warm"]
    print(f"warm / cold: x{cold['seconds'] / warm['seconds']:.1f} faster; identical scores: {cold['scores'] == warm['scores']}")


if __name__ == "__main__":
    main()
