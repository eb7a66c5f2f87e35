"""Running a tool stage over many inputs: concurrently within the tool's bound, through the stage cache."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ..api.backends import Generation
from ..api.tools import Tool, ToolResult
from ..declarations import Stage
from .stage_cache import StageCache, stage_key


def run_each(tool: Tool, texts: Sequence[str], options: dict) -> list[ToolResult]:
    """``tool`` on each text, at most ``tool.concurrency`` at once; a tool that raises gives that text a
    failed result (a one-line error), so one odd input does not end the run."""

    def result_of(text: str) -> ToolResult:
        try:
            return tool.run(text, options)
        except Exception as error:
            return ToolResult(f"error: tool {tool.name!r} failed: {type(error).__name__}: {error}", ok=False)

    with ThreadPoolExecutor(max_workers=max(1, tool.concurrency)) as pool:
        return list(pool.map(result_of, texts))


def run_tool(
    tool: Tool, stage: Stage, inputs: Sequence[str], cache: StageCache | None = None
) -> tuple[list[Generation], list[bool]]:
    """The tool's result for each input as a :class:`Generation`; which were cached.

    Like a model's batch, each result records the wall time of all the inputs
    run together and how many they were (the cost table shares it out); a
    tool writes no tokens.

    Tools are deterministic by contract, so every tool stage reads and writes
    the cache when one is given, keyed by the tool's identity (name, version,
    options) and the input text.
    """
    identity = {"tool": tool.identity(stage.tool_options)}
    keys = [stage_key(identity, None, text, stage.generation, None) for text in inputs]
    hits = cache.get_many(keys) if cache is not None else {}
    todo = [index for index, key in enumerate(keys) if key not in hits]

    started = time.perf_counter()
    outputs = run_each(tool, [inputs[index] for index in todo], stage.tool_options)
    results = dict(zip(todo, outputs))
    seconds = time.perf_counter() - started
    fresh = {
        index: Generation(result.text, prompt_tokens=0, completion_tokens=0, latency_s=seconds, batch_size=len(todo))
        for index, result in results.items()
    }
    if cache is not None and fresh:
        cache.put_many({keys[index]: generation for index, generation in fresh.items()})
    generations = [fresh[index] if index in fresh else hits[keys[index]] for index in range(len(inputs))]
    return generations, [index not in fresh for index in range(len(inputs))]
