"""Programs the Qwen2.5-Coder teacher writes from a problem and its reference solution, kept when they compute it.

The teacher (``teacher-program-stack.yaml``) sees a training problem and its
reference solution without the calculator annotations, and translates the
solution into a program. A program is kept only when it is straight-line code
ending in one print, every number in it is one the problem states (or a unit
constant such as 60 minutes an hour: a teacher that sees the solution could
copy its intermediate results, which the student can never know), and the
sandbox runs it and prints the reference answer. The rest are counted by why
they were dropped.

The work runs in shards of rows, each written whole when done
(``rows-00032.jsonl``: the shard starting at row 32, every row with its
program and verdict), so a stopped run loses at most one shard and a rerun
does only the rows no shard holds. ``kept.jsonl`` (the kept rows in
``annotated_programs.py``'s layout, which ``build_targets.py`` reads) and
``summary.json`` are rewritten from all shards at the end of every run;
``--rejudge`` judges the stored programs again after a check changed.

    python examples/gsm8k_experiment/teacher_programs.py ../shared/data/gsm8k/train.jsonl \\
        examples/gsm8k_experiment/teacher-programs --skip-last 500 --minutes 90
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

from annotated_programs import reference_answer, same_number
from build_targets import solution_text

from fslm_core.files import atomic_write_json, atomic_write_text

HERE = Path(__file__).resolve().parent
NUMBER_WORDS = {
    "half": (2, 0.5), "halves": (2, 0.5), "twice": (2,), "double": (2,), "triple": (3,), "thrice": (3,),
    "third": (3,), "thirds": (3,), "quarter": (4, 0.25), "quarters": (4, 0.25), "fourth": (4,), "fourths": (4,),
    "fifth": (5,), "fifths": (5,), "tenth": (10,), "dozen": (12,), "dozens": (12,), "one": (1,), "two": (2,),
    "three": (3,), "four": (4,), "five": (5,), "six": (6,), "seven": (7,), "eight": (8,), "nine": (9,),
    "ten": (10,), "eleven": (11,), "twelve": (12,), "thirteen": (13,), "fourteen": (14,), "fifteen": (15,),
    "sixteen": (16,), "seventeen": (17,), "eighteen": (18,), "nineteen": (19,), "twenty": (20,), "thirty": (30,),
    "forty": (40,), "fifty": (50,), "sixty": (60,), "seventy": (70,), "eighty": (80,), "ninety": (90,),
    "hundred": (100,), "thousand": (1000,), "million": (1000000,),
}  # fmt: skip
UNIT_CONSTANTS = {0, 1, 2, 4, 5, 7, 10, 12, 24, 25, 30, 52, 60, 100, 365, 1000, 0.5, 0.25, 0.1, 0.01}
"""Numbers a program may use without the problem stating them: halving, weekdays, weeks in a month or a year,
days in a week or a year, hours, minutes, cents in a quarter or a dollar, percent."""
QUESTION_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")
FENCE = re.compile(r"```(?:python)?\s*\n(.*?)(?:```|$)", re.DOTALL)


def stated_numbers(question: str) -> set[float]:
    """The numbers a problem states, in digits or words; in a problem about percentages, each also as a
    fraction and as the factor of a rise or a fall by it (60% longer: 1.6)."""
    values = [float(text.replace(",", "")) for text in QUESTION_NUMBER.findall(question)]
    for word in re.findall(r"[a-z]+", question.lower()):
        values.extend(float(value) for value in NUMBER_WORDS.get(word, ()))
    numbers = set(values)
    if "%" in question or "percent" in question.lower():
        numbers.update(factor for value in values for factor in (value / 100, 1 + value / 100, 1 - value / 100))
    return numbers


def code_of(reply: str) -> str:
    """The code of a teacher's reply (of its fenced block if it has one), without comments or blank lines."""
    fenced = FENCE.search(reply)
    code = (fenced.group(1) if fenced else reply).strip()
    try:
        return ast.unparse(ast.parse(code))
    except SyntaxError:
        return code


def shape_problem(program: str) -> str | None:
    """Why ``program`` is not straight-line assignments ending in one print, or None when it is."""
    try:
        statements = ast.parse(program).body
    except SyntaxError:
        return "not valid Python"
    if not statements:
        return "no code"
    *assignments, last = statements
    is_print = (
        isinstance(last, ast.Expr)
        and isinstance(last.value, ast.Call)
        and isinstance(last.value.func, ast.Name)
        and last.value.func.id == "print"
    )
    if not is_print:
        return "does not end in one print"
    if not all(isinstance(statement, ast.Assign | ast.AugAssign) for statement in assignments):
        return "not straight-line code"
    return None


def unstated_numbers(program: str, question: str) -> list[float]:
    """Numbers in ``program`` that the problem does not state and that are no unit constant."""
    stated = stated_numbers(question)
    literals = [
        float(node.value)
        for node in ast.walk(ast.parse(program))
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool)
    ]
    return [value for value in literals if value not in stated and value not in UNIT_CONSTANTS]


def verdict(program: str, question: str, reference: str) -> tuple[str, str]:
    """("kept" or why the program was dropped, what the sandbox printed or its error)."""
    from fslm_core.runtime.sandbox import run_program

    problem = shape_problem(program)
    if problem is not None:
        return problem, ""
    if unstated_numbers(program, question):
        return "uses a number the problem does not state", ""
    result = run_program(program)
    if not result.ok:
        return "program failed", (result.error or "")[-200:]
    if not same_number(result.output, reference):
        return "wrong answer", result.output[-200:]
    return "kept", result.output.strip()


def write_shard(path: Path, numbers: list[int], rows: list[dict], stack, batch_size: int) -> None:
    """Have the teacher write the programs of ``rows[n]`` for each row number ``n`` and judge them, into ``path``."""
    from fslm_core.runtime.engine import run_stack

    chosen = [rows[number] for number in numbers]
    prompts = [f"{row['question']}\nSolution: {solution_text(row['answer'])}" for row in chosen]
    started = time.perf_counter()
    traces = run_stack(stack, prompts, batch_size=batch_size)
    seconds = time.perf_counter() - started
    records = []
    for number, row, trace in zip(numbers, chosen, traces, strict=True):
        reply = next(message.text for message in trace.messages if message.stage == "program")
        program = code_of(reply)
        reference = reference_answer(row["answer"])
        why, printed = verdict(program, row["question"], reference)
        records.append(
            {
                "row": number,
                "question": row["question"],
                "program": program,
                "answer": reference,
                "printed": printed,
                "verdict": why,
                "teacher_seconds": round(seconds / len(chosen), 2),  # the shard's time, shared evenly
            }
        )
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records))


def rejudge(folder: Path) -> None:
    """Judge every stored program again with the checks as they are now, and rewrite the shards' verdicts."""
    for shard in sorted(folder.glob("rows-*.jsonl")):
        records = [json.loads(line) for line in shard.read_text().splitlines()]
        for record in records:
            record["verdict"], record["printed"] = verdict(record["program"], record["question"], record["answer"])
        atomic_write_text(shard, "".join(json.dumps(record) + "\n" for record in records))


def written(folder: Path) -> dict[int, dict]:
    """Every row the shards in ``folder`` hold, by row number."""
    return {
        record["row"]: record
        for shard in sorted(folder.glob("rows-*.jsonl"))
        for record in map(json.loads, shard.read_text().splitlines())
    }


def collect(folder: Path) -> dict:
    """Rewrite ``kept.jsonl`` and ``summary.json`` from every shard in ``folder``; return the summary."""
    by_row = written(folder)
    records = [by_row[row] for row in sorted(by_row)]
    kept = [
        {key: record[key] for key in ("row", "question", "program", "answer")}
        for record in records
        if record["verdict"] == "kept"
    ]
    atomic_write_text(folder / "kept.jsonl", "".join(json.dumps(row) + "\n" for row in kept))
    summary = {
        "rows": len(records),
        "kept": len(kept),
        "dropped": dict(Counter(record["verdict"] for record in records if record["verdict"] != "kept")),
        "teacher_seconds": round(sum(record["teacher_seconds"] for record in records), 1),
    }
    atomic_write_json(folder / "summary.json", summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("output", type=Path, help="Folder of shards; rerun to resume.")
    parser.add_argument("--skip-last", type=int, default=500, help="Rows held out at the end (the dev set).")
    parser.add_argument("--limit", type=int, help="The first N rows only.")
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--minutes", type=float, help="Start no new shard after this many minutes.")
    parser.add_argument("--stack", type=Path, default=HERE / "teacher-program-stack.yaml")
    parser.add_argument(
        "--rejudge", action="store_true", help="Judge the stored programs again (after a check changed); no teacher."
    )
    args = parser.parse_args()
    from fslm_core.runtime.stack_choice import resolve_stack

    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    rows = rows[: len(rows) - args.skip_last][: args.limit]
    args.output.mkdir(parents=True, exist_ok=True)
    if args.rejudge:
        rejudge(args.output)
        print(json.dumps(collect(args.output)), file=sys.stderr)
        return
    stack = resolve_stack(str(args.stack))
    started = time.monotonic()
    todo = sorted(set(range(len(rows))) - set(written(args.output)))
    for start in range(0, len(todo), args.shard_size):
        if args.minutes is not None and time.monotonic() - started > args.minutes * 60:
            break
        numbers = todo[start : start + args.shard_size]
        write_shard(args.output / f"rows-{numbers[0]:05d}.jsonl", numbers, rows, stack, args.batch_size)
        print(
            json.dumps({"rows from": numbers[0], "minutes": round((time.monotonic() - started) / 60, 1)}),
            file=sys.stderr,
        )
    print(json.dumps(collect(args.output)), file=sys.stderr)


if __name__ == "__main__":
    main()
