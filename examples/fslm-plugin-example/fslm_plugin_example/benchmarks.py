"""A benchmark: an lm-evaluation-harness task over a small JSONL file shipped in the package."""

from __future__ import annotations

from importlib.resources import files

from fslm_core.api import Benchmark

TASK = "example_arithmetic"


def arithmetic_config(data_path: str | None = None) -> dict:
    """The task config, as lm-eval's TaskManager reads it (the keys of a task YAML).

    ``data_path`` replaces the bundled file (``fslm eval --data-file example_arithmetic=PATH``).
    """
    data = data_path or files("fslm_plugin_example") / "data" / "arithmetic.jsonl"
    return {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 8},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    }


ARITHMETIC = Benchmark(
    name=TASK,
    build_config=arithmetic_config,
    description="Five one-step arithmetic questions (an example of a plugin-provided task).",
    output_type="generate_until",
    tags=("example",),
)
