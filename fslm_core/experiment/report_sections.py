"""Sections of the experiment's report that read files other steps wrote: stage checks and ablations."""

from __future__ import annotations

import json
from pathlib import Path

from ..messages import Trace
from .ablations import ABLATIONS_FILE
from .stage_checks import CHECKS_FILE


def stage_table(output: Path, state: dict) -> list[str]:
    path = output / CHECKS_FILE
    if not path.is_file():
        return ["(stage checks not run yet)"]
    checks = json.loads(path.read_text(encoding="utf-8"))
    evaluation = state.get("steps", {}).get("train-stack", {}).get("evaluation", {})
    rows = [
        f"On {checks['held_out_examples']} held-out examples, each stack running end to end:",
        "",
        "| stage | role checks | passed, trained | passed, untrained | target loss, trained | "
        "target loss, untrained | tokens written, trained / untrained |",
        "|---|---|---|---|---|---|---|",
    ]
    trained, untrained = checks["stacks"]["trained"], checks["stacks"]["untrained"]
    for stage, info in trained.items():
        scores = evaluation.get(stage, {})
        loss = f"{scores['target_loss']:.3f}" if "target_loss" in scores else "-"
        base = f"{scores['base_target_loss']:.3f}" if "base_target_loss" in scores else "-"
        checks_named = ", ".join(info["checks"]) or ("token F1 vs reference" if "token_f1" in info else "non-empty")
        passed = f"{info['role_pass_rate']:.2f}"
        passed_base = f"{untrained[stage]['role_pass_rate']:.2f}"
        if "token_f1" in info:
            passed += f" (F1 {info['token_f1']:.3f})"
            passed_base += f" (F1 {untrained[stage]['token_f1']:.3f})"
        rows.append(
            f"| {stage} | {checks_named} | {passed} | {passed_base} | {loss} | {base} | "
            f"{info['mean_completion_tokens']:.0f} / {untrained[stage]['mean_completion_tokens']:.0f} |"
        )
    return rows


def ablation_tables(output: Path) -> list[str]:
    path = output / ABLATIONS_FILE
    if not path.is_file():
        return []
    results = json.loads(path.read_text(encoding="utf-8"))
    lines = ["", "## What we tried", ""]
    if results.get("teachers"):
        lines += [
            "Teachers on the same first examples of the data: the share of examples whose targets pass the target "
            "filter, why the others failed, and the pace of distillation on this machine.",
            "",
            "| teacher | prompt | examples | kept | most common failures | examples per hour |",
            "|---|---|---|---|---|---|",
        ]
        for name, info in results["teachers"].items():
            failures = "; ".join(
                f"{stage}: " + ", ".join(f"{count} {why}" for why, count in list(reasons.items())[:2])
                for stage, reasons in info.get("reasons", {}).items()
            )
            pace = info.get("examples_per_hour")
            lines.append(
                f"| {info['teacher']} ({name}) | {info['teacher_prompt']} | {info['examples']} | "
                f"{info['kept_share']:.0%} | {failures or '-'} | {pace if pace is not None else '-'} |"
            )
    if results.get("variants"):
        first = next(iter(results["variants"].values()))
        stages = list(first["stages"])
        lines += [
            "",
            f"Training variants on a slice, each scored on the same {first['held_out_examples']} held-out "
            "examples (filtered, from shards no variant trained on): held-out target loss per stage "
            "(teacher-forced), the share of end-to-end outputs passing each stage's role checks, and the answer's "
            "token F1 against the reference.",
            "",
            "| variant | training examples | " + " | ".join(f"{s} loss / role" for s in stages) + " | answer F1 |",
            "|---|---|" + "---|" * len(stages) + "---|",
        ]
        for name, info in results["variants"].items():
            cells = []
            for stage in stages:
                loss = info["target_loss"].get(stage)
                cells.append(f"{loss:.3f} / {info['stages'][stage]['role_pass_rate']:.2f}" if loss is not None else "-")
            examples = max(info["training_examples"].values()) if info["training_examples"] else 0
            f1 = info["stages"][stages[-1]].get("token_f1", float("nan"))
            lines.append(f"| {name} | {examples} | " + " | ".join(cells) + f" | {f1:.3f} |")
        untrained = first.get("base_target_loss", {})
        if untrained:
            lines += [
                "",
                "Untrained stages on the same held-out examples, target loss: "
                + ", ".join(f"{stage} {loss:.3f}" for stage, loss in untrained.items() if loss is not None)
                + ".",
            ]
    return lines


def document_traces(result: dict, heading: str) -> list[str]:
    """Each sample-trace document of an eval result under ``heading`` (formatted with ``doc_id`` and
    ``score``), its traces as text blocks."""
    lines = []
    for document in result.get("sample_traces") or ():
        score = result["scores"].get(str(document["doc_id"]))
        lines += [heading.format(doc_id=document["doc_id"], score=score), ""]
        for trace in document["traces"]:
            lines += ["```text", Trace.model_validate(trace).render(), "```", ""]
    return lines
