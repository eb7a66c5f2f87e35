"""The built-in ``calculator`` tool: arithmetic on an expression, read by a parser (never ``eval``)."""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from ..api.hookspecs import hookimpl
from ..api.tools import Tool, ToolResult

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPONENT = 64
MAX_DIGITS = 60


class CalculationError(ValueError):
    """An expression the calculator refuses: not arithmetic, too large, or dividing by zero."""


def calculate(expression: str) -> Fraction:
    """The exact value of an arithmetic expression: numbers, ``+ - * / // % **``, parentheses.

    Python's own parser reads the expression into a tree, and only number and
    operator nodes are evaluated, in exact fractions: names, calls,
    attributes and everything else are refused. Exponents above
    :data:`MAX_EXPONENT` and numbers above :data:`MAX_DIGITS` digits are refused.
    """
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**").replace(",", "")
    text = re.sub(r"(?<=\d)\s*x\s*(?=[\d(])", "*", text)  # 3 x 4
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculationError(f"not an arithmetic expression: {expression.strip()[:80]!r}") from None
    return _value(tree.body)


def _value(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        if isinstance(node.value, float) and not math.isfinite(node.value):
            raise CalculationError("not a finite number")
        return Fraction(node.value).limit_denominator(10**12) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow):
            if right.denominator != 1 or abs(right) > MAX_EXPONENT:
                raise CalculationError(f"exponent {float(right):g} is not a whole number up to {MAX_EXPONENT}")
        if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
            raise CalculationError("division by zero")
        result = Fraction(_BINARY[type(node.op)](left, right))
        if len(str(abs(result.numerator))) > MAX_DIGITS or len(str(result.denominator)) > MAX_DIGITS:
            raise CalculationError(f"a number over {MAX_DIGITS} digits")
        return result
    raise CalculationError(f"not arithmetic: {ast.unparse(node)[:60]!r}")


def format_number(value: Fraction, places: int = 6) -> str:
    """A whole number as is, else a decimal rounded to ``places`` without trailing zeros."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.{places}f}".rstrip("0").rstrip(".")


def expression_of(text: str) -> str:
    """The expression in a stage's message: its last non-empty line, without a trailing ``=`` or ``= ?``."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return re.sub(r"=\s*\??\s*$", "", line)


class CalculatorTool(Tool):
    """Arithmetic on the expression an earlier stage wrote."""

    name = "calculator"
    description = "Exact arithmetic (+ - * / // % ** and parentheses) on the last line of the input; never eval."
    concurrency = 1
    options = {"places": "decimal places of a result that is not whole (default 6)"}

    def check_options(self, options: Mapping[str, Any]) -> None:
        super().check_options(options)
        places = options.get("places")
        if places is not None and (isinstance(places, bool) or not isinstance(places, int) or not 0 <= places <= 20):
            raise ValueError(f"places: expected a whole number from 0 to 20, got {places!r}")

    def run(self, text: str, options: Mapping[str, Any]) -> ToolResult:
        if text.strip().startswith("error:"):  # an earlier tool's failure, passed on as it is
            return ToolResult(text.strip(), ok=False)
        try:
            value = calculate(expression_of(text))
        except CalculationError as error:
            return ToolResult(f"error: {error}", ok=False)
        return ToolResult(format_number(value, options.get("places", 6)))


@hookimpl(tryfirst=True)
def register_tools(register):
    register(CalculatorTool())
