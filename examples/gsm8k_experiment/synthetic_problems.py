"""Synthetic grade-school problems with their programs, written from templates (no model, no GSM8K row).

TinyGSM's lesson is that a small program-writing model gains most from *more questions*; GSM8K's
training file has no more to give, and the teacher is slow. These templates give new questions of the
kinds the stage reads wrongly in its traces: a fraction or a percentage of a quantity taken away (and
what is left), "times as many" and "more than" chains, rates over time, change from a bill, ages,
sharing, spending. Each template varies who, what, the verbs, the fraction's wording (words or digits)
and the numbers (chosen so every step is a whole number), and writes the program in the layout of the
annotated programs: one variable per computed quantity, named for what it is, then ``print``. Every
program's steps are run here (they are this script's own text, never a model's) for the answer, and a
template whose answer is not a whole number is a bug that stops the script.

The rows have the layout of ``annotated_programs.py``'s output plus the worked ``solution`` the
chain-of-thought baseline would learn, so ``build_targets.py`` takes them as one more programs file.
No question uses the demo question's numbers (24 and 10) with three quarters: the demo stays unseen.

    python examples/gsm8k_experiment/synthetic_problems.py /tmp/gsm8k/synthetic.jsonl --count 3000
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

NAMES = {
    "she": "Maya Sofia Ava Mia Zoe Priya Hana Grace Lena Ruth Tara Wendy Nora Carla Elena Ines Kim Mina Nadia Paula",
    "he": "Liam Noah Ethan Lucas Omar Diego Felix Kofi Mateo Sam Victor Yusuf Ben Dev Hugo Jack Leo Oscar Raj Tom",
}
POSSESSIVE = {"she": "her", "he": "his"}


@dataclass(frozen=True)
class Stock:
    """Things a worker makes and lets go of: "A baker bakes 60 muffins and sells a third of them"."""

    worker: str
    items: str
    key: str  # the items' name in a variable
    make: str
    take: str
    taken: str  # in a variable: muffins_sold


STOCKS = (
    Stock("baker", "muffins", "muffins", "bakes", "sells", "sold"),
    Stock("baker", "loaves of bread", "loaves", "bakes", "sells", "sold"),
    Stock("farmer", "eggs", "eggs", "collects", "sells", "sold"),
    Stock("farmer", "apples", "apples", "picks", "sells", "sold"),
    Stock("florist", "roses", "roses", "grows", "sells", "sold"),
    Stock("shopkeeper", "toys", "toys", "orders", "sells", "sold"),
    Stock("librarian", "books", "books", "buys", "lends out", "lent"),
    Stock("teacher", "pencils", "pencils", "buys", "hands out", "handed_out"),
    Stock("chef", "cookies", "cookies", "bakes", "serves", "served"),
    Stock("gardener", "tomatoes", "tomatoes", "picks", "gives away", "given_away"),
    Stock("potter", "bowls", "bowls", "makes", "sells", "sold"),
    Stock("fisherman", "fish", "fish", "catches", "sells", "sold"),
)
# (items, variable name, verb that gets more, verb that lets some go, that verb in a variable)
THINGS = (
    ("stickers", "stickers", "buys", "gives away", "given_away"),
    ("marbles", "marbles", "wins", "loses", "lost"),
    ("baseball cards", "cards", "buys", "trades away", "traded"),
    ("candies", "candies", "gets", "eats", "eaten"),
    ("stamps", "stamps", "buys", "gives away", "given_away"),
    ("seashells", "seashells", "finds", "gives away", "given_away"),
    ("beads", "beads", "buys", "uses", "used"),
    ("crayons", "crayons", "gets", "loses", "lost"),
    ("comic books", "comics", "buys", "sells", "sold"),
    ("toy cars", "cars", "gets", "gives away", "given_away"),
)
# (thing, lowest price, highest price), prices in whole dollars
GOODS = (
    ("jacket", 40, 160),
    ("pair of shoes", 40, 120),
    ("bike", 100, 400),
    ("lamp", 20, 80),
    ("backpack", 20, 60),
    ("watch", 60, 200),
    ("video game", 20, 80),
    ("chair", 40, 160),
    ("tent", 80, 240),
)
FRACTIONS = (
    (Fraction(1, 2), ("half", "1/2")),
    (Fraction(1, 3), ("a third", "one third", "1/3")),
    (Fraction(2, 3), ("two thirds", "2/3")),
    (Fraction(1, 4), ("a quarter", "one fourth", "1/4")),
    (Fraction(3, 4), ("three quarters", "three fourths", "3/4")),
    (Fraction(1, 5), ("a fifth", "one fifth", "1/5")),
    (Fraction(2, 5), ("two fifths", "2/5")),
    (Fraction(3, 5), ("three fifths", "3/5")),
    (Fraction(1, 10), ("a tenth", "1/10")),
)
VARIABLE = re.compile(r"\b[a-z_]\w*\b")
PERCENTS = (10, 20, 25, 30, 40, 50, 60, 75)
TIMES = {2: ("twice", "two times", "2 times"), 3: ("three times", "3 times"), 4: ("four times", "4 times")}


@dataclass
class Problem:
    schema: str
    question: str
    steps: list[tuple[str, str]]  # (variable, expression over numbers and earlier variables)


def someone(rng: random.Random, avoid: tuple[str, ...] = ()) -> tuple[str, str]:
    pronoun = rng.choice(("she", "he"))
    name = rng.choice([name for name in NAMES[pronoun].split() if name not in avoid])
    return name, pronoun


def fraction(rng: random.Random) -> tuple[Fraction, str]:
    value, words = rng.choice(FRACTIONS)
    return value, rng.choice(words)


def times(rng: random.Random) -> tuple[int, str]:
    factor = rng.choice(tuple(TIMES))
    return factor, rng.choice(TIMES[factor])


def multiple(rng: random.Random, step: int, low: int, high: int) -> int:
    return step * rng.randint(max(1, -(-low // step)), max(1, high // step))


def of(number: int | str, value: Fraction) -> str:
    """``number`` times ``value`` as a program writes it: ``60 / 2``, ``60 * 3 / 4``."""
    if value.numerator == 1:
        return f"{number} / {value.denominator}"
    return f"{number} * {value.numerator} / {value.denominator}"


def capital(text: str) -> str:
    return text[0].upper() + text[1:]


def part_taken_then_more(rng: random.Random) -> Problem:
    stock = rng.choice(STOCKS)
    value, words = fraction(rng)
    total = multiple(rng, value.denominator, 12, 120)
    more = rng.randint(3, 40)
    name, pronoun = rng.choice(((f"A {stock.worker}", "he"), (f"A {stock.worker}", "she"), someone(rng)))
    then = rng.choice(("Then", "Later", "The next day", "After that,"))
    ending = rng.choice((f"How many {stock.items} does {pronoun} have now?", f"How many {stock.items} are there now?"))
    question = f"{name} {stock.make} {total} {stock.items} and {stock.take} {words} of them. "
    question += f"{then} {pronoun} {stock.make} {more} more. {ending}"
    key = stock.key
    return Problem(
        "part taken, then more",
        question,
        [
            (f"{key}_{stock.taken}", of(total, value)),
            (f"{key}_left", f"{total} - {key}_{stock.taken}"),
            (f"{key}_now", f"{key}_left + {more}"),
        ],
    )


def part_taken_then_fewer(rng: random.Random) -> Problem:
    stock = rng.choice(STOCKS)
    value, words = fraction(rng)
    total = multiple(rng, value.denominator, 20, 150)
    taken = int(total * value)
    if total - taken < 3:
        return part_taken_then_more(rng)
    fewer = rng.randint(1, total - taken - 1)
    name, pronoun = someone(rng)
    question = (
        f"{name} {stock.make} {total} {stock.items}. In the morning {pronoun} {stock.take} {words} of them, "
        f"and in the afternoon {pronoun} {stock.take} {fewer} more. How many {stock.items} are left?"
    )
    key = stock.key
    return Problem(
        "part taken, then a number",
        question,
        [
            (f"{key}_morning", of(total, value)),
            (f"{key}_after_morning", f"{total} - {key}_morning"),
            (f"{key}_left", f"{key}_after_morning - {fewer}"),
        ],
    )


def part_left(rng: random.Random) -> Problem:
    items, key, _, let_go, gone = rng.choice(THINGS)
    value, words = fraction(rng)
    total = multiple(rng, value.denominator, 10, 100)
    name, pronoun = someone(rng)
    ask = rng.choice((f"How many {items} does {name} have left?", f"How many {items} does {pronoun} keep?"))
    question = f"{name} has {total} {items}. {capital(pronoun)} {let_go} {words} of them. {ask}"
    return Problem(
        "part taken, what is left",
        question,
        [(f"{key}_{gone}", of(total, value)), (f"{key}_left", f"{total} - {key}_{gone}")],
    )


def whole_from_rest(rng: random.Random) -> Problem:
    items, key, _, let_go, _ = rng.choice(THINGS)
    value, words = fraction(rng)
    total = multiple(rng, value.denominator, 10, 100)
    name, pronoun = someone(rng)
    left = int(total - total * value)
    question = (
        f"{name} {let_go} {words} of {POSSESSIVE[pronoun]} {items} and has {left} left. "
        f"How many {items} did {pronoun} have at first?"
    )
    return Problem(
        "the whole from what is left",
        question,
        [
            ("parts_left", f"{value.denominator} - {value.numerator}"),
            (f"{key}_per_part", f"{left} / parts_left"),
            (f"{key}_at_first", f"{key}_per_part * {value.denominator}"),
        ],
    )


def part_of_rest(rng: random.Random) -> Problem:
    stock = rng.choice(STOCKS)
    first, first_words = fraction(rng)
    second, second_words = fraction(rng)
    total = (
        first.denominator * second.denominator * rng.randint(1, max(1, 160 // (first.denominator * second.denominator)))
    )
    name, pronoun = someone(rng)
    question = (
        f"{name} {stock.make} {total} {stock.items}. {capital(pronoun)} {stock.take} {first_words} of them on "
        f"Saturday and {second_words} of the rest on Sunday. How many {stock.items} are left?"
    )
    key = stock.key
    return Problem(
        "part, then part of the rest",
        question,
        [
            (f"{key}_saturday", of(total, first)),
            (f"{key}_rest", f"{total} - {key}_saturday"),
            (f"{key}_sunday", of(f"{key}_rest", second)),
            (f"{key}_left", f"{key}_rest - {key}_sunday"),
        ],
    )


def percent_off(rng: random.Random) -> Problem:
    good, low, high = rng.choice(GOODS)
    price = multiple(rng, 20, low, high)
    percent = rng.choice(PERCENTS)
    count = rng.choice((1, 1, 2, 3, 4))
    name, pronoun = someone(rng)
    if count == 1:
        question = (
            f"A {good} costs ${price}. It is on sale for {percent}% off. How much does {name} pay for the {good}?"
        )
    else:
        plural = {"pair of shoes": "pairs of shoes", "watch": "watches"}.get(good, good + "s")
        question = (
            f"A {good} costs ${price}, and the store takes {percent}% off every {good}. "
            f"{name} buys {count} {plural}. How much does {pronoun} pay?"
        )
    steps = [("discount", f"{price} * {percent} / 100"), ("sale_price", f"{price} - discount")]
    if count > 1:
        steps.append(("total_paid", f"sale_price * {count}"))
    return Problem("percent off a price", question, steps)


def percent_used(rng: random.Random) -> Problem:
    items, key, _, let_go, gone = rng.choice(THINGS)
    percent = rng.choice(PERCENTS)
    total = multiple(rng, 20, 20, 200)
    name, pronoun = someone(rng)
    question = f"{name} has {total} {items} and {let_go} {percent}% of them. How many {items} does {pronoun} have left?"
    return Problem(
        "percent taken, what is left",
        question,
        [(f"{key}_{gone}", f"{total} * {percent} / 100"), (f"{key}_left", f"{total} - {key}_{gone}")],
    )


def times_as_many(rng: random.Random) -> Problem:
    items, key, *_ = rng.choice(THINGS)
    first, _ = someone(rng)
    second, _ = someone(rng, (first,))
    number = rng.randint(4, 40)
    factor, words = times(rng)
    question = (
        f"{first} has {number} {items}. {second} has {words} as many {items} as {first}. "
        f"How many {items} do they have together?"
    )
    return Problem(
        "times as many, together",
        question,
        [(f"{second.lower()}_{key}", f"{number} * {factor}"), ("total", f"{number} + {second.lower()}_{key}")],
    )


def times_difference(rng: random.Random) -> Problem:
    items, key, *_ = rng.choice(THINGS)
    first, _ = someone(rng)
    second, _ = someone(rng, (first,))
    number = rng.randint(4, 50)
    factor, words = times(rng)
    question = (
        f"{first} has {number} {items}, and {second} has {words} as many. "
        f"How many more {items} does {second} have than {first}?"
    )
    return Problem(
        "times as many, difference",
        question,
        [
            (f"{second.lower()}_{key}", f"{number} * {factor}"),
            ("difference", f"{second.lower()}_{key} - {number}"),
        ],
    )


def part_as_many(rng: random.Random) -> Problem:
    items, key, *_ = rng.choice(THINGS)
    first, _ = someone(rng)
    second, _ = someone(rng, (first,))
    value, words = fraction(rng)
    number = multiple(rng, value.denominator, 10, 90)
    more = rng.randint(2, 20)
    third, _ = someone(rng, (first, second))
    words = "half" if value == Fraction(1, 2) else words
    question = (
        f"{first} has {number} {items}. {second} has {words} as many {items} as {first}, and {third} has {more} "
        f"more than {second}. How many {items} does {third} have?"
    )
    return Problem(
        "part as many, then more",
        question,
        [
            (f"{second.lower()}_{key}", of(number, value)),
            (f"{third.lower()}_{key}", f"{second.lower()}_{key} + {more}"),
        ],
    )


def more_and_fewer(rng: random.Random) -> Problem:
    items, key, *_ = rng.choice(THINGS)
    first, _ = someone(rng)
    second, _ = someone(rng, (first,))
    third, _ = someone(rng, (first, second))
    number = rng.randint(5, 60)
    more = rng.randint(2, 25)
    fewer = rng.randint(1, number + more - 1)
    question = (
        f"{first} has {number} {items}. {second} has {more} more {items} than {first}, and {third} has {fewer} "
        f"fewer than {second}. How many {items} do the three of them have in all?"
    )
    return Problem(
        "more than, fewer than, in all",
        question,
        [
            (f"{second.lower()}_{key}", f"{number} + {more}"),
            (f"{third.lower()}_{key}", f"{second.lower()}_{key} - {fewer}"),
            ("total", f"{number} + {second.lower()}_{key} + {third.lower()}_{key}"),
        ],
    )


def pay_over_time(rng: random.Random) -> Problem:
    name, pronoun = someone(rng)
    rate = rng.randint(8, 30)
    hours = rng.randint(2, 9)
    days = rng.randint(2, 6)
    weeks = rng.choice((1, 2, 3, 4))
    period = "in a week" if weeks == 1 else f"in {weeks} weeks"
    question = (
        f"{name} earns ${rate} an hour. {capital(pronoun)} works {hours} hours a day, {days} days a week. "
        f"How much does {pronoun} earn {period}?"
    )
    steps = [("pay_per_day", f"{rate} * {hours}"), ("pay_per_week", f"pay_per_day * {days}")]
    if weeks > 1:
        steps.append((f"pay_{weeks}_weeks", f"pay_per_week * {weeks}"))
    return Problem("pay over time", question, steps)


def money_left(rng: random.Random) -> Problem:
    name, pronoun = someone(rng)
    good, low, high = rng.choice(GOODS)
    price = rng.randint(low, high)
    count = rng.randint(2, 6)
    each = rng.randint(2, 15)
    small = rng.choice(("notebooks", "pens", "snacks", "bottles of juice", "magazines"))
    spent = price + count * each
    budget = spent + rng.randint(1, 80)
    question = (
        f"{name} has ${budget}. {capital(pronoun)} buys a {good} for ${price} and {count} {small} for ${each} each. "
        f"How much money does {pronoun} have left?"
    )
    key = small.split()[0]
    return Problem(
        "money left after shopping",
        question,
        [
            (f"{key}_cost", f"{count} * {each}"),
            ("spent", f"{price} + {key}_cost"),
            ("money_left", f"{budget} - spent"),
        ],
    )


def change_from_bill(rng: random.Random) -> Problem:
    name, pronoun = someone(rng)
    items = rng.choice(("apples", "tickets", "cupcakes", "notebooks", "sandwiches", "plants"))
    count = rng.randint(2, 9)
    price = rng.randint(1, min(12, 99 // count))
    bill = next(b for b in (5, 10, 20, 50, 100) if b > count * price)
    question = (
        f"{name} buys {count} {items} at ${price} each and pays with a ${bill} bill. "
        f"How much change does {pronoun} get?"
    )
    return Problem(
        "change from a bill",
        question,
        [("cost", f"{count} * {price}"), ("change", f"{bill} - cost")],
    )


def packs_given(rng: random.Random) -> Problem:
    items, key, *_ = rng.choice(THINGS)
    name, pronoun = someone(rng)
    packs = rng.randint(2, 8)
    per_pack = rng.randint(5, 20)
    friends = rng.randint(2, 6)
    total = packs * per_pack
    each = rng.randint(1, max(1, total // friends - 1))
    question = (
        f"{name} buys {packs} packs of {items} with {per_pack} {items} in each pack. {capital(pronoun)} gives "
        f"{each} {items} to each of {POSSESSIVE[pronoun]} {friends} friends. How many {items} does {pronoun} have left?"
    )
    return Problem(
        "packs, then some to each friend",
        question,
        [
            (f"{key}_bought", f"{packs} * {per_pack}"),
            (f"{key}_given", f"{each} * {friends}"),
            (f"{key}_left", f"{key}_bought - {key}_given"),
        ],
    )


def share_equally(rng: random.Random) -> Problem:
    items, key, *_ = rng.choice(THINGS)
    name, pronoun = someone(rng)
    friends = rng.randint(2, 7)
    with_self = rng.random() < 0.5
    people = friends + 1 if with_self else friends
    each = rng.randint(2, 15)
    total = people * each
    if with_self:
        among, each_one = f"{'herself' if pronoun == 'she' else 'himself'} and {friends} friends", "person"
    else:
        among, each_one = f"{friends} friends", "friend"
    question = f"{name} shares {total} {items} equally among {among}. How many {items} does each {each_one} get?"
    steps = [("people", f"{friends} + 1")] if with_self else []
    steps.append((f"{key}_each", f"{total} / people" if with_self else f"{total} / {friends}"))
    return Problem("shared equally", question, steps)


def age_later(rng: random.Random) -> Problem:
    first, _ = someone(rng)
    second, _ = someone(rng, (first,))
    age = rng.randint(3, 20)
    years = rng.randint(2, 15)
    if rng.random() < 0.5:
        factor, words = times(rng)
        relation, expression = f"{words} as old as {first}", f"{age} * {factor}"
    else:
        older = rng.randint(2, 30)
        relation, expression = f"{older} years older than {first}", f"{age} + {older}"
    question = f"{first} is {age} years old. {second} is {relation}. How old will {second} be in {years} years?"
    return Problem(
        "ages",
        question,
        [
            (f"{second.lower()}_age_now", expression),
            (f"{second.lower()}_age_later", f"{second.lower()}_age_now + {years}"),
        ],
    )


def reading_week(rng: random.Random) -> Problem:
    name, pronoun = someone(rng)
    weekday = rng.randint(5, 40)
    weekend = rng.randint(10, 60)
    question = (
        f"{name} reads {weekday} pages every weekday and {weekend} pages on each day of the weekend. "
        f"How many pages does {pronoun} read in a week?"
    )
    return Problem(
        "weekdays and weekend",
        question,
        [
            ("weekday_pages", f"{weekday} * 5"),
            ("weekend_pages", f"{weekend} * 2"),
            ("pages_per_week", "weekday_pages + weekend_pages"),
        ],
    )


def percent_more(rng: random.Random) -> Problem:
    place = rng.choice(("A museum", "A zoo", "A school club", "A bakery", "A park", "A website"))
    noun = {"A school club": "members", "A bakery": "customers", "A website": "visitors"}.get(place, "visitors")
    last_year = multiple(rng, 20, 40, 1000)
    percent = rng.choice(PERCENTS)
    question = (
        f"{place} had {last_year} {noun} last month. This month it had {percent}% more. "
        f"How many {noun} did it have this month?"
    )
    return Problem(
        "percent more",
        question,
        [(f"extra_{noun}", f"{last_year} * {percent} / 100"), (f"{noun}_this_month", f"{last_year} + extra_{noun}")],
    )


def trip(rng: random.Random) -> Problem:
    name, pronoun = someone(rng)
    first_speed, second_speed = rng.randint(30, 70), rng.randint(20, 70)
    first_hours, second_hours = rng.randint(2, 5), rng.randint(2, 4)
    question = (
        f"{name} drives at {first_speed} miles per hour for {first_hours} hours, then at {second_speed} miles per "
        f"hour for {second_hours} hours. How many miles does {pronoun} drive in all?"
    )
    return Problem(
        "distance at two speeds",
        question,
        [
            ("first_miles", f"{first_speed} * {first_hours}"),
            ("second_miles", f"{second_speed} * {second_hours}"),
            ("total_miles", "first_miles + second_miles"),
        ],
    )


SCHEMAS: tuple[Callable[[random.Random], Problem], ...] = (
    part_taken_then_more,
    part_taken_then_fewer,
    part_left,
    whole_from_rest,
    part_of_rest,
    percent_off,
    percent_used,
    times_as_many,
    times_difference,
    part_as_many,
    more_and_fewer,
    pay_over_time,
    money_left,
    change_from_bill,
    packs_given,
    share_equally,
    age_later,
    reading_week,
    percent_more,
    trip,
)


def program_text(problem: Problem) -> str:
    lines = [f"{name} = {expression}" for name, expression in problem.steps]
    return "\n".join([*lines, f"print({problem.steps[-1][0]})"])


def step_values(problem: Problem) -> dict[str, float]:
    """Every step's value, from the template's own arithmetic (this script's text, never a model's)."""
    values: dict[str, float] = {}
    exec("\n".join(f"{name} = {expression}" for name, expression in problem.steps), {}, values)  # noqa: S102
    return values


def as_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def worked_solution(problem: Problem, values: dict[str, float]) -> str:
    """The steps as a chain-of-thought target: each expression with its names as values, then ``#### N``."""
    lines = [
        f"{name.replace('_', ' ').capitalize()}: "
        f"{VARIABLE.sub(lambda found: as_number(values[found.group()]), expression)} = {as_number(values[name])}"
        for name, expression in problem.steps
    ]
    return "\n".join(lines) + f"\n#### {as_number(values[problem.steps[-1][0]])}"


def is_demo_like(question: str) -> bool:
    return "three quarters" in question and " 24 " in question and " 10 " in question


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows, seen, per_schema = [], set(), Counter()
    while len(rows) < args.count:
        problem = rng.choice(SCHEMAS)(rng)
        values = step_values(problem)
        answer = values[problem.steps[-1][0]]
        if problem.question in seen or is_demo_like(problem.question) or answer < 0:
            continue
        if not float(answer).is_integer():
            raise ValueError(f"template {problem.schema!r} is wrong: {problem.question!r} gives {answer}")
        seen.add(problem.question)
        per_schema[problem.schema] += 1
        rows.append(
            {
                "row": len(rows),
                "question": problem.question,
                "program": program_text(problem),
                "answer": as_number(answer),
                "solution": worked_solution(problem, values),
                "schema": problem.schema,
            }
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{len(rows)} problems -> {args.output}")
    for schema, count in per_schema.most_common():
        print(f"  {count:5d}  {schema}")


if __name__ == "__main__":
    main()
