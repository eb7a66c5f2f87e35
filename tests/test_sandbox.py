"""The python tool's sandbox: programs that try to escape or exhaust it each end with a clear error, in time."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from fslm_core.default_plugins.calculator_tool import CalculationError, CalculatorTool, calculate
from fslm_core.default_plugins.python_tool import PythonTool, program_text
from fslm_core.runtime.sandbox import SandboxLimits, run_program

LIMITS = SandboxLimits(wall_seconds=4, cpu_seconds=2, memory_bytes=256 << 20, output_bytes=16 << 10)


def test_a_program_prints_its_answer():
    result = run_program("muffins = 24 - 24 * 3 / 4 + 10\nprint(int(muffins))", LIMITS)
    assert (result.ok, result.output, result.error) == (True, "16\n", None)


def test_the_standard_library_s_maths_is_there():
    source = (
        "import math, fractions, statistics\nprint(math.gcd(12, 18), fractions.Fraction(6, 8), statistics.mean([1, 2]))"
    )
    assert run_program(source, LIMITS).output == "6 3/4 1.5\n"


def test_the_value_of_a_named_variable_can_be_the_result():
    assert run_program("answer = 6 * 7", LIMITS, variable="answer").output.strip() == "42"
    missing = run_program("other = 1", LIMITS, variable="answer")
    assert not missing.ok and missing.error == "NameError: the program sets no variable 'answer'"


@pytest.mark.parametrize(
    ("name", "source", "error", "within"),
    [
        ("endless loop", "while True:\n    pass", "used more than 2 s of CPU time", 3.5),
        ("sleep past the wall time", "import time\ntime.sleep(60)", "timed out after 4 s", 5.0),
        ("fork", "import os\nos.fork()", "PermissionError (line 2): sandbox: os.fork is not allowed", 1.5),
        ("huge allocation", "block = bytearray(4 * 1024**3)", "MemoryError: used more than 256 MB", 1.5),
        (
            "reading /etc/passwd",
            "print(open('/etc/passwd').read())",
            "sandbox: reading /etc/passwd is not allowed",
            1.5,
        ),
        (
            "writing outside its folder",
            "open('/tmp/fslm-escape.txt', 'w').write('x')",
            "sandbox: writing /tmp/fslm-escape.txt",
            1.5,
        ),
        ("os.system", "import os; os.system('touch /tmp/fslm-escape-2')", "sandbox: os.system is not allowed", 1.5),
        ("a 10 MB print", "print('x' * 10_000_000)", "printed more than 16 kB", 1.5),
        (
            "listing the root folder",
            "import os; print(os.listdir('/'))",
            "sandbox: os.listdir on / is not allowed",
            1.5,
        ),
        ("ctypes", "import ctypes", "sandbox: importing ctypes is not allowed", 1.5),
        ("a syntax error", "print(1 +", "SyntaxError (line 1)", 1.5),
        ("an exception", "x = 1\ny = x / 0", "ZeroDivisionError (line 2): division by zero", 1.5),
    ],
)
def test_escapes_and_exhaustion_end_with_a_clear_error_within_the_limit(name, source, error, within):
    started = time.perf_counter()
    result = run_program(source, LIMITS)
    assert time.perf_counter() - started < within, name
    assert not result.ok and error in result.error, (name, result.error)
    assert "\n" not in result.error
    assert len(result.output.encode()) <= LIMITS.output_bytes


def test_a_socket_cannot_be_opened():
    result = run_program("import socket\nsocket.socket().connect(('127.0.0.1', 9))", LIMITS)
    assert not result.ok
    # as root the program runs as nobody and only the preloaded modules import; otherwise the audit hook refuses
    assert "No module named 'socket'" in result.error or "sandbox: socket.__new__ is not allowed" in result.error


def test_nothing_of_the_caller_s_environment_reaches_the_program(monkeypatch):
    monkeypatch.setenv("FSLM_SECRET_FOR_TEST", "hunter2")
    result = run_program("import os\nprint(sorted(os.environ))", LIMITS)
    assert result.ok and "FSLM_SECRET_FOR_TEST" not in result.output


def test_writing_inside_its_own_folder_works_and_the_folder_is_gone_afterwards():
    result = run_program(
        "import os\nopen('notes.txt', 'w').write('kept')\nprint(open('notes.txt').read(), os.getcwd())", LIMITS
    )
    assert result.ok and result.output.startswith("kept ")
    from pathlib import Path

    assert not Path(result.output.split()[1]).exists()


def test_the_python_tool_takes_a_fenced_block_and_reports_failures_in_one_line():
    assert program_text("Here it is:\n```python\nprint(2 + 2)\n```\nDone.") == "print(2 + 2)"
    assert program_text("print(1)") == "print(1)"
    tool = PythonTool()
    assert tool.run("```python\nprint(2 + 2)\n```", {}).text == "4"
    failed = tool.run("print(undefined_name)", {})
    assert not failed.ok and failed.text == "error: NameError (line 1): name 'undefined_name' is not defined"
    assert tool.run("  ", {}).text == "error: no program to run"
    with pytest.raises(ValueError, match="unknown option 'timeout' for tool 'python'"):
        tool.check_options({"timeout": 3})
    with pytest.raises(ValueError, match="wall_seconds: expected a positive number"):
        tool.check_options({"wall_seconds": -1})


def test_the_calculator_reads_arithmetic_exactly_and_nothing_else():
    assert calculate("24 - 24 * 3/4 + 10") == 16
    assert calculate("(2 + 3) × 4 ÷ 5") == 4
    assert calculate("2^10 - 1,000") == 24
    assert calculate("0.1 + 0.2") == Fraction(3, 10)
    for bad in ("__import__('os').system('ls')", "x + 1", "abs(-1)", "2 ** 1000", "1 / 0", "'a' * 3", "9" * 70 + "*10"):
        with pytest.raises(CalculationError):
            calculate(bad)
    tool = CalculatorTool()
    assert tool.run("The total is\n24 * 3 / 4 =", {}).text == "18"
    assert tool.run("2 / 3", {"places": 2}).text == "0.67"
    assert tool.run("72.0", {}).text == "72"
    assert tool.run("error: timed out after 10 s", {}).text == "error: timed out after 10 s"
    assert not tool.run("open the door", {}).ok
