"""GSM8K's calculator annotations as Python programs with named variables, kept only when they compute the answer.

Each step of a GSM8K solution carries its arithmetic: ``Natalia sold 48/2 =
<<48/2=24>>24 clips in May.`` Every annotation becomes one assignment, named
from the words that follow its result (``clips_in_may = 48 / 2``); a number
that an earlier step computed is replaced by that step's name; the program
prints the last value. A program is kept only when the sandbox runs it and its
output equals the reference answer (``#### 72``); the rest are counted by why
they were dropped.

    python examples/gsm8k_experiment/annotated_programs.py ../shared/data/gsm8k/train.jsonl out.jsonl \\
        --skip-last 500
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ANNOTATION = re.compile(r"<<([^=<>]+)=([^<>]+)>>")
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w])")
STOPWORDS = {
    "a", "an", "the", "of", "in", "on", "to", "for", "and", "is", "are", "was", "were", "be", "he", "she", "they",
    "it", "his", "her", "their", "its", "so", "that", "this", "with", "at", "by", "from", "each", "per", "has",
    "have", "had", "will", "would", "can", "there", "which", "who", "then", "total", "altogether", "all", "more",
    "left", "now", "than", "as", "or", "if", "after", "before", "i", "we", "you", "them", "him", "us", "my",
}  # fmt: skip


def reference_answer(solution: str) -> str:
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")


def name_for(after: str, before: str, taken: set[str], step: int) -> str:
    """A variable name from the words after a step's result (else before its expression), unique in the program."""
    for text in (after, before):
        words = [w.lower() for w in re.findall(r"[A-Za-z]+", text.split(".")[0])]
        words = [w for w in words if w not in STOPWORDS and len(w) > 1][:3]
        if words:
            name = "_".join(words)
            break
    else:
        name = f"step_{step}"
    if not name.isidentifier() or name in {"print", "int", "float", "round", "sum", "max", "min"}:
        name = f"step_{step}"
    unique, count = name, 2
    while unique in taken:
        unique, count = f"{name}_{count}", count + 1
    taken.add(unique)
    return unique


def number_text(value: str) -> str:
    return value.strip().rstrip(".").replace(",", "").replace("$", "")


def program_of(solution: str) -> str | None:
    """The program for one GSM8K solution, or None when a step has no usable arithmetic."""
    lines, names, taken = [], {}, set()
    step = 0
    for line in solution.split("####")[0].splitlines():
        for match in ANNOTATION.finditer(line):
            step += 1
            expression, result = match.group(1), number_text(match.group(2))
            expression = expression.replace("x", "*").replace("X", "*").replace("÷", "/").replace("^", "**")
            expression = expression.replace(",", "").replace("$", "").replace("%", "/100")
            if not re.fullmatch(r"[\d\s.+\-*/()]+", expression):
                return None
            # a number an earlier step computed reads as that step's name (the latest one of that value)
            expression = NUMBER.sub(lambda m: names.get(_canonical(m.group(0)), m.group(0)), expression)
            expression = re.sub(r"\s*([+\-*/])\s*(?=[^*])", r" \1 ", expression).replace("*  *", "**")
            expression = re.sub(r"\s+", " ", expression).strip()
            after = line[match.end() :].lstrip("0123456789.,$% ")
            before = line[: match.start()]
            before = before[: before.rfind("=")] if "=" in before else before
            name = name_for(after, re.sub(r"[\d.+\-*/x=$]+", " ", before), taken, step)
            lines.append(f"{name} = {expression}")
            names[_canonical(result)] = name
    if not lines:
        return None
    last = lines[-1].split(" = ", 1)[0]
    lines.append(f"print({last})")
    return "\n".join(lines)


QUESTION_NUMBER = re.compile(r"(?<![\w.])\$?(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(?![\w])")


def with_givens(program: str, question: str) -> str:
    """The program with the question's numbers first declared as named variables, then used by name.

    ``clips_may = 48 / 2`` for "sold clips to 48 of her friends in April" becomes
    ``friends_april = 48`` then ``clips_may = friends_april / 2``: the model copies the
    quantities out of the question before it combines them. A value the question states twice
    stays a literal, since its name would be a guess; numbers the question does not state
    (60 minutes an hour, 2 for half) stay literals too.
    """
    lines = program.splitlines()
    taken = {line.split(" = ", 1)[0] for line in lines if " = " in line}
    stated: dict[str, list[re.Match[str]]] = {}
    for match in QUESTION_NUMBER.finditer(question):
        stated.setdefault(_canonical(match.group(1).replace(",", "")), []).append(match)
    used = {_canonical(n) for line in lines if " = " in line for n in NUMBER.findall(line.split(" = ", 1)[1])}
    givens: dict[str, str] = {}  # canonical value -> name, in the question's order
    for value, matches in sorted(stated.items(), key=lambda item: item[1][0].start()):
        if len(matches) != 1 or value not in used:
            continue
        match = matches[0]
        # the words right after the number, up to the clause's end or a conjunction ("12 pages and today")
        after = re.split(r"[.,;:?!]|\b(?:and|or|but|if|then|so|while|which|that)\b", question[match.end() :])[0]
        before = re.split(r"[.,;:?!]", question[: match.start()])[-1].split()[-3:]
        givens[value] = name_for(after, " ".join(before), taken, len(givens) + 1)
    if not givens:
        return program

    def named(line: str) -> str:
        if " = " not in line:
            return line
        target, expression = line.split(" = ", 1)
        expression = NUMBER.sub(lambda m: givens.get(_canonical(m.group(0)), m.group(0)), expression)
        return f"{target} = {expression}"

    declarations = [f"{name} = {value}" for value, name in givens.items()]
    return "\n".join(declarations + [named(line) for line in lines])


def _canonical(number: str) -> str:
    try:
        value = float(number)
    except ValueError:
        return number
    return str(int(value)) if value == int(value) else repr(value)


def same_number(output: str, reference: str) -> bool:
    try:
        return abs(float(output.strip().splitlines()[-1]) - float(reference)) < 1e-6
    except (ValueError, IndexError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--skip-last", type=int, default=500, help="Rows held out at the end (the dev set).")
    parser.add_argument(
        "--givens", action="store_true", help="Declare the question's numbers as named variables first."
    )
    args = parser.parse_args()
    from fslm_core.files import atomic_write_text
    from fslm_core.runtime.sandbox import run_program

    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    rows = rows[: len(rows) - args.skip_last]
    kept, dropped = [], Counter()
    for index, row in enumerate(rows):
        program = program_of(row["answer"])
        if program is not None and args.givens:
            program = with_givens(program, row["question"])
        if program is None:
            dropped["no usable annotation"] += 1
            continue
        result = run_program(program)
        reference = reference_answer(row["answer"])
        if not result.ok:
            dropped["program failed"] += 1
        elif not same_number(result.output, reference):
            dropped["wrong answer"] += 1
        else:
            kept.append({"row": index, "question": row["question"], "program": program, "answer": reference})
    atomic_write_text(args.output, "".join(json.dumps(row) + "\n" for row in kept))  # makes its folder too
    print(json.dumps({"rows": len(rows), "kept": len(kept), "dropped": dict(dropped)}), file=sys.stderr)


if __name__ == "__main__":
    main()
