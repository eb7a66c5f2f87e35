"""The built-in ``python`` tool: runs the program an earlier stage wrote, in the sandbox, and returns its output."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..api.hookspecs import hookimpl
from ..api.tools import Tool, ToolResult
from ..runtime.sandbox import SandboxLimits, run_program

_FENCED = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)


def program_text(text: str) -> str:
    """The program in a stage's message: the first fenced code block if there is one, else the whole text."""
    match = _FENCED.search(text)
    return (match.group(1) if match else text).strip("\n")


class PythonTool(Tool):
    """Run a Python program in a separate, limited process (``fslm_core/runtime/sandbox.py``)."""

    name = "python"
    description = "Run the program an earlier stage wrote (sandboxed) and return what it printed, or a one-line error."
    concurrency = 2
    options = {
        "variable": "return the value of this variable after the program ran, instead of what it printed",
        "wall_seconds": "wall-time limit per program (default 10)",
        "cpu_seconds": "CPU-time limit per program (default 5)",
        "memory_mb": "address-space limit per program in MB (default 512)",
        "output_kb": "most output kept, in kB (default 64)",
    }

    def check_options(self, options: Mapping[str, Any]) -> None:
        super().check_options(options)
        for key in ("wall_seconds", "cpu_seconds", "memory_mb", "output_kb"):
            value = options.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise ValueError(f"{key}: expected a positive number, got {value!r}")
        variable = options.get("variable")
        if variable is not None and (not isinstance(variable, str) or not variable.isidentifier()):
            raise ValueError(f"variable: expected a Python name, got {variable!r}")

    @staticmethod
    def limits(options: Mapping[str, Any]) -> SandboxLimits:
        default = SandboxLimits()
        return SandboxLimits(
            wall_seconds=float(options.get("wall_seconds", default.wall_seconds)),
            cpu_seconds=max(1, int(options.get("cpu_seconds", default.cpu_seconds))),
            memory_bytes=int(options.get("memory_mb", default.memory_bytes >> 20)) << 20,
            output_bytes=int(options.get("output_kb", default.output_bytes >> 10)) << 10,
        )

    def run(self, text: str, options: Mapping[str, Any]) -> ToolResult:
        program = program_text(text)
        if not program.strip():
            return ToolResult("error: no program to run", ok=False)
        result = run_program(program, self.limits(options), options.get("variable"))
        if not result.ok:
            return ToolResult(f"error: {result.error}", ok=False, fields={"seconds": round(result.seconds, 3)})
        output = result.output.strip()
        return ToolResult(output, fields={"seconds": round(result.seconds, 3)})


@hookimpl(tryfirst=True)
def register_tools(register):
    register(PythonTool())
