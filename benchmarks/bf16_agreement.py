"""bfloat16 against float32 on the same stack: do the answers agree, how far apart are the scores, which is faster?

Each dtype runs in its own process, float32 first, on the default stack
(``smollm2-paper`` when installed; ``--stack`` for another):

agreement:      the greedy answers of the first N Alpaca instructions without
                input, stage by stage through ``Stack.run`` (``dtype=``); the
                share of identical final answers, and each answer that differs.
speed:          the wall time of those runs (model loading timed apart), and
                bf16 / fp32.
log-likelihood: the answer stage's log-likelihood of every choice of the first
                ARC-Easy dev questions, as ``fslm eval`` scores them (lm-eval's
                "Question: ...\\nAnswer:" context, the upstream stages' messages
                in the answer stage's prompt). The float32 process writes the
                prompts; the bf16 process scores the very same ones, so the
                difference is the arithmetic's alone.

    python benchmarks/bf16_agreement.py [--prompts 64] [--arc-questions 5]

Accuracy on the ARC-Easy and HellaSwag dev slices is what lm-eval measures,
with its stderr; run ``fslm eval`` once per dtype on the same documents:

    FSLM_DATA_DIR=../shared/data fslm eval --tasks local_arc_easy,local_hellaswag --num-fewshot 0 --limit 100 \\
        --dtype float32 --output eval-float32
    FSLM_DATA_DIR=../shared/data fslm eval --tasks local_arc_easy,local_hellaswag --num-fewshot 0 --limit 100 \\
        --dtype bfloat16 --output eval-bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alpaca_prompts import ALPACA, load_prompts
from machine_info import machine

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ARC_EASY_DEV = DATA / "arc" / "ARC-Easy-Dev.jsonl"




def arc_questions(path: Path, count: int) -> list[tuple[str, list[str]]]:
    """(lm-eval's ARC context, its choices' continuations) of the first ``count`` questions."""
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines()[:count]:
        row = json.loads(line)
        context = f"Question: {row['question']['stem']}\nAnswer:"
        questions.append((context, [f" {choice['text']}" for choice in row["question"]["choices"]]))
    return questions


def scoring_pairs(lm, questions: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    """The answer stage's (prompt, continuation) pairs, as ``fslm eval`` builds them."""
    traces = lm.upstream_traces([context for context, _ in questions])
    pairs = []
    for trace, (_, continuations) in zip(traces, questions):
        prompt = lm.final_prompt_for(trace)
        # A chat prompt ends where the reply starts; the reply does not open with lm-eval's space.
        pairs += [(prompt, c.lstrip(" ") if prompt[-1:].isspace() else c) for c in continuations]
    return pairs


def measure(dtype: str, stack_name: str | None, prompts: list[str], arc: int, batch_size: int, pairs_file: Path):
    from fslm_core.lmeval import FslmLM
    from fslm_core import resolve_stack
    from fslm_core.runtime import bind_stack

    stack = resolve_stack(stack_name)
    started = time.perf_counter()
    bind_stack(stack.model_copy(update={"dtype": dtype}))  # the default pool, which FslmLM below reuses
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    traces = stack.run(prompts, batch_size=batch_size, dtype=dtype)
    run_s = time.perf_counter() - started
    lm = FslmLM(stack=stack, dtype=dtype, batch_size=batch_size)
    stage_texts: dict[str, list[str]] = {}
    for trace in traces:
        for message in trace.messages:
            stage_texts.setdefault(message.stage, []).append(message.text)
    if pairs_file.exists():
        pairs = [tuple(pair) for pair in json.loads(pairs_file.read_text(encoding="utf-8"))]
    else:
        pairs = scoring_pairs(lm, arc_questions(ARC_EASY_DEV, arc))
        pairs_file.write_text(json.dumps(pairs), encoding="utf-8")
    scores = lm.final.backend.loglikelihood(pairs, [lm.final.adapter_name] * len(pairs), batch_size)
    return {
        "dtype": dtype,
        "stack": stack.name,
        "loaded_dtype": str(lm.final.backend.model.dtype),
        "load_s": load_s,
        "run_s": run_s,
        "generated_tokens": sum(m.completion_tokens for t in traces for m in t.messages),
        "answers": [t.answer for t in traces],
        "stage_texts": stage_texts,
        "loglikelihoods": [score for score, _ in scores],
        "machine": machine(),
    }


def short(text: str | None, width: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--arc-questions", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--stack", help="Stack file, folder or ready-made stack name (default: fslm's default).")
    parser.add_argument("--prompts-file", type=Path, default=ALPACA, help="Alpaca-format JSON.")
    parser.add_argument("--measure", choices=["float32", "bfloat16"], help=argparse.SUPPRESS)
    parser.add_argument("--pairs-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        prompts = load_prompts(args.prompts_file, args.prompts)
        print(json.dumps(measure(args.measure, args.stack, prompts, args.arc_questions, args.batch_size, args.pairs_file)))
        return

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for dtype in ("float32", "bfloat16"):
            command = [sys.executable, __file__, "--measure", dtype, "--prompts", str(args.prompts),
                       "--arc-questions", str(args.arc_questions), "--batch-size", str(args.batch_size),
                       "--prompts-file", str(args.prompts_file), "--pairs-file", str(Path(scratch, "pairs.json"))]
            if args.stack:
                command += ["--stack", args.stack]
            completed = subprocess.run(
                command, capture_output=True, text=True,
                env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"),
            )
            if completed.returncode != 0:
                raise SystemExit(f"{dtype} run failed:\n{completed.stderr[-3000:]}")
            results[dtype] = json.loads(completed.stdout.strip().splitlines()[-1])
    fp32, bf16 = results["float32"], results["bfloat16"]
    info = fp32["machine"]
    print(f"CPU: {info['cpu']}, {info['cores']} cores, flags {' '.join(info['flags']) or 'none of note'}; "
          f"torch {info['torch']}, {info['threads']} threads")
    print(f"stack {fp32['stack']}, {args.prompts} Alpaca prompts, greedy, batch size {args.batch_size}")
    print(f"{'dtype':<10}{'loaded as':>16}{'load s':>9}{'run s':>9}{'gen tokens':>12}")
    for row in (fp32, bf16):
        print(f"{row['dtype']:<10}{row['loaded_dtype']:>16}{row['load_s']:>9.1f}{row['run_s']:>9.1f}"
              f"{row['generated_tokens']:>12}")
    print(f"wall time bf16 / fp32: {bf16['run_s'] / fp32['run_s']:.2f}")
    differing = [i for i, (a, b) in enumerate(zip(fp32["answers"], bf16["answers"])) if a != b]
    same = len(fp32["answers"]) - len(differing)
    print(f"identical final answers: {same}/{len(fp32['answers'])} ({same / len(fp32['answers']):.1%})")
    # A stage's reply can differ because its own arithmetic did or because an earlier stage's did; the
    # second count keeps only the prompts whose input to that stage was still the same in both dtypes.
    still_same = [True] * len(fp32["answers"])
    for stage, texts in fp32.get("stage_texts", {}).items():
        other = bf16["stage_texts"][stage]
        equal = [a == b for a, b in zip(texts, other)]
        fed = [i for i, same_input in enumerate(still_same) if same_input]
        print(f"  stage {stage:<10} identical {sum(equal)}/{len(equal)}; with the same input in both: "
              f"{sum(equal[i] for i in fed)}/{len(fed)}")
        still_same = [a and b for a, b in zip(still_same, equal)]
    prompts = load_prompts(args.prompts_file, args.prompts)
    for index in differing:
        print(f"  [{index}] {short(prompts[index], 70)}")
        print(f"      fp32: {short(fp32['answers'][index])}")
        print(f"      bf16: {short(bf16['answers'][index])}")
    gaps = [abs(a - b) for a, b in zip(fp32["loglikelihoods"], bf16["loglikelihoods"])]
    print(f"answer-stage log-likelihoods of {len(gaps)} ARC-Easy choices ({args.arc_questions} questions): "
          f"|bf16 - fp32| mean {sum(gaps) / len(gaps):.4f}, max {max(gaps):.4f} "
          f"(fp32 values from {min(fp32['loglikelihoods']):.2f} to {max(fp32['loglikelihoods']):.2f})")
    choices = [len(c) for _, c in arc_questions(ARC_EASY_DEV, args.arc_questions)]
    picks = []
    for row in (fp32, bf16):
        scores, start, picked = row["loglikelihoods"], 0, []
        for count in choices:
            picked.append(max(range(count), key=lambda i: scores[start + i]))
            start += count
        picks.append(picked)
    print(f"same choice picked (highest log-likelihood): {sum(a == b for a, b in zip(*picks))}/{len(choices)}")


if __name__ == "__main__":
    main()
