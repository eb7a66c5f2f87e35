"""Training targets for the GSM8K experiment, as distilled-data folders ``fslm train`` reads.

From the annotated programs (``annotated_programs.py``): the ``program``
stage's target is the program. From the same rows' reference solutions: the
same-data baseline's ``answer`` target is the solution with its calculator
annotations taken out, ending in GSM8K's ``#### N``. Every row appears once,
its prompt alternately the bare question and the question as lm-eval's
``local_gsm8k`` asks it (``Question: ...\\nAnswer:``), so both ways of asking
are learnt. The development set (the last 500 rows of the training file)
never reaches this script: ``annotated_programs.py --skip-last 500`` left it out.
The teacher's programs (``teacher_programs.py``'s ``kept.jsonl``) have the
same layout; ``--rows-in`` keeps only the rows another file also holds, so two
sources can be compared on the same questions. ``--numerals`` writes each
prompt as the ``numerals`` tool passes it on ("three quarters of" -> "3/4 of"),
so a program stage that reads that tool learns from the text it will see.
Given several programs files, their rows are joined: a question two sources
hold appears once per source, asked the other way in the second. A row with its own ``solution``
(``synthetic_problems.py``'s, not a GSM8K row) brings the baseline's target with it.

    python examples/gsm8k_experiment/build_targets.py annotated.jsonl ../shared/data/gsm8k/train.jsonl run/
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from fslm_plugin_smollm2_gsm8k.numerals import with_digits

from fslm_core.distillation import write_given_targets

ANNOTATION = re.compile(r"<<[^<>]*>>")


def prompt_for(question: str, row: int) -> str:
    return f"Question: {question}\nAnswer:" if row % 2 else question


def solution_text(answer: str) -> str:
    """A GSM8K reference solution without its calculator annotations, ending in ``#### N``."""
    steps, _, final = answer.rpartition("####")
    return f"{ANNOTATION.sub('', steps).strip()}\n#### {final.strip()}"


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "programs",
        type=Path,
        nargs="+",
        help="Kept programs: annotated_programs.py's or teacher_programs.py's (several: their rows joined).",
    )
    parser.add_argument("gsm8k", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--limit", type=int, help="The first N kept rows of each programs file only.")
    parser.add_argument(
        "--rows-in",
        type=Path,
        help="Only the rows this file (same layout) also holds: two sources' programs for the same questions.",
    )
    parser.add_argument(
        "--numerals", action="store_true", help="Prompts as the numerals tool rewrites them (quantities as digits)."
    )
    args = parser.parse_args()
    shared = {row["row"] for row in read_rows(args.rows_in)} if args.rows_in else None
    rewrite = with_digits if args.numerals else str
    examples = []  # (prompt, row) pairs
    for source_index, path in enumerate(args.programs):
        rows = [row for row in read_rows(path) if shared is None or row["row"] in shared][: args.limit]
        examples += [(rewrite(prompt_for(row["question"], row["row"] + source_index)), row) for row in rows]
    solutions = [json.loads(line)["answer"] for line in args.gsm8k.read_text().splitlines() if line.strip()]
    programs = [{"prompt": prompt, "targets": {"program": row["program"]}} for prompt, row in examples]

    def worked(row: dict) -> str:  # a synthetic row brings its own; a GSM8K row's comes from the file
        return row["solution"] if "solution" in row else solution_text(solutions[row["row"]])

    baseline = [{"prompt": prompt, "targets": {"answer": worked(row)}} for prompt, row in examples]
    names = " + ".join(path.name for path in args.programs)
    kind = "Problems" if any("solution" in row for _, row in examples) else "GSM8K train rows"
    source = f"{kind} whose program ({names}) computes the reference answer ({len(examples)} rows)"
    if args.numerals:
        source += ", questions with their quantities as digits"
    write_given_targets(args.output / "program-targets", programs, "gsm8k-program", source)
    write_given_targets(args.output / "solution-targets", baseline, "gsm8k-solution", source)
    print(f"{len(examples)} examples -> {args.output}/program-targets, {args.output}/solution-targets")


if __name__ == "__main__":
    main()
