"""The stage cache: a rerun reads what greedy stages wrote, marks it, and never returns a stale answer."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading

import pytest
from click.testing import CliRunner

from fslm_core import GenerationSettings, Stack, Stage
from fslm_core.api.backends import Generation
from fslm_core.cli import cli
from fslm_core.runtime import ModelPool, run_stack
from fslm_core.runtime.stage_cache import StageCache

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["What is 2 + 2?", "Name a colour.", "What is 2 + 2?"]


def two_stage_stack(model_id: str, adapter=None, instruction: str = "Recall a fact.", **settings) -> Stack:
    generation = GenerationSettings(max_new_tokens=6, **settings)
    return Stack(
        name="cached",
        stages=[
            Stage(name="recall", model=model_id, instruction=instruction, adapter=adapter, generation=generation),
            Stage(name="answer", model=model_id, instruction="Answer.", reads=("recall",), generation=generation),
        ],
    )


def texts(traces) -> list[list[str]]:
    return [[message.text for message in trace.messages] for trace in traces]


def test_a_rerun_reads_every_greedy_stage_from_the_cache_with_the_same_messages(tiny_model_id, tmp_path):
    cache = StageCache(tmp_path / "stages.sqlite")
    pool = ModelPool()
    stack = two_stage_stack(tiny_model_id)
    first = run_stack(stack, PROMPTS, pool=pool, cache=cache)
    assert not any(message.cached for trace in first for message in trace.messages)
    assert cache.info()["entries"] == 4  # two stages x two distinct prompts
    again = run_stack(stack, PROMPTS, pool=pool, cache=cache)
    assert texts(again) == texts(first)
    assert all(message.cached for trace in again for message in trace.messages)
    assert [trace.answer for trace in again] == [trace.answer for trace in first]


def test_a_changed_adapter_prompt_or_setting_is_not_answered_from_the_cache(tiny_model_id, tiny_adapters, tmp_path):
    cache = StageCache(tmp_path / "stages.sqlite")
    pool = ModelPool()
    adapter = shutil.copytree(tiny_adapters[0], tmp_path / "adapter")
    run_stack(two_stage_stack(tiny_model_id, adapter), PROMPTS[:1], pool=pool, cache=cache)

    def recall_cached(stack, prompts=PROMPTS[:1]) -> bool:
        (trace,) = run_stack(stack, prompts, pool=ModelPool(), cache=cache)
        return trace.message("recall").cached

    assert recall_cached(two_stage_stack(tiny_model_id, adapter))
    assert not recall_cached(two_stage_stack(tiny_model_id, adapter, instruction="Recall two facts."))
    assert not recall_cached(two_stage_stack(tiny_model_id, adapter, repetition_penalty=1.3))
    assert not recall_cached(two_stage_stack(tiny_model_id, adapter), ["What is 3 + 3?"])
    # Retrained in place: same folder, other weights.
    shutil.rmtree(adapter)
    shutil.copytree(tiny_adapters[1], adapter)
    assert not recall_cached(two_stage_stack(tiny_model_id, adapter))


def test_sampling_stages_are_never_cached(tiny_model_id, tmp_path):
    cache = StageCache(tmp_path / "stages.sqlite")
    stack = two_stage_stack(tiny_model_id, temperature=0.8)
    run_stack(stack, PROMPTS[:1], pool=ModelPool(), cache=cache)
    assert cache.info()["entries"] == 0


def test_concurrent_writers_and_readers_share_one_file(tmp_path):
    path = tmp_path / "stages.sqlite"
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            cache = StageCache(path)
            for round_ in range(20):
                items = {f"{worker}-{round_}-{i}": Generation(f"text {i}", 3, 2, 0.1, 4) for i in range(10)}
                cache.put_many(items)
                assert cache.get_many(list(items)) == items
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert StageCache(path).info()["entries"] == 4 * 20 * 10
    (mode,) = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"


def test_many_caches_opened_at_once_on_new_files_all_get_in(tmp_path):
    # The journal-mode switch on a new file is where simultaneous openers collide (CI saw "database is locked").
    workers = 8
    errors: list[BaseException] = []
    for attempt in range(60):
        path = tmp_path / f"fresh-{attempt}.sqlite"
        start = threading.Barrier(workers)

        def open_and_write(worker: int, path=path, start=start) -> None:
            try:
                start.wait()
                StageCache(path).put_many({str(worker): Generation("t", 1, 1, 0.0, 1)})
            except BaseException as error:  # noqa: BLE001 - reported by the assertion below
                errors.append(error)

        threads = [threading.Thread(target=open_and_write, args=(worker,)) for worker in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, f"attempt {attempt}: {errors[0]!r}"
        assert StageCache(path).info()["entries"] == workers


def test_fslm_cache_shows_and_clears_stage_outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("FSLM_CACHE_DIR", str(tmp_path))
    StageCache().put_many({"k": Generation("t", 1, 1, 0.0, 1)})
    runner = CliRunner()
    shown = json.loads(runner.invoke(cli, ["cache", "info", "--json"]).output)
    assert shown["stages"]["entries"] == 1 and shown["stages"]["bytes"] > 0
    cleared = runner.invoke(cli, ["cache", "clear"])
    assert cleared.exit_code == 0 and "stage outputs" in cleared.output
    assert StageCache().info()["entries"] == 0


def test_the_cost_table_counts_tokens_time_parameters_and_cache_hits(tiny_model_id, tiny_adapters, tmp_path):
    from fslm_core.runtime.costs import adapter_parameters, render_costs, stage_costs

    cache = StageCache(tmp_path / "stages.sqlite")
    stack = two_stage_stack(tiny_model_id, tiny_adapters[0])
    first = run_stack(stack, PROMPTS, pool=ModelPool(), cache=cache)
    again = run_stack(stack, PROMPTS, pool=ModelPool(), cache=cache)
    recall, answer = stage_costs(stack, first)
    assert recall.runs == answer.runs == 3 and recall.cached == 0
    assert recall.prompt_tokens == sum(t.message("recall").prompt_tokens for t in first)
    assert recall.completion_tokens == sum(t.message("recall").completion_tokens for t in first)
    assert recall.seconds > 0 and recall.adapter_parameters == adapter_parameters(tiny_adapters[0]) > 0
    assert answer.adapter_parameters == 0
    cached_recall, _ = stage_costs(stack, again)
    assert cached_recall.cached == 3 and cached_recall.seconds == 0.0
    table = render_costs(stage_costs(stack, first)).splitlines()
    assert table[0].split()[:3] == ["stage", "runs", "cached"] and table[-1].startswith("total")


def test_fslm_run_stats_prints_the_table_on_stderr_and_cache_marks_hits(tiny_model_id, tmp_path, monkeypatch):
    monkeypatch.setenv("FSLM_CACHE_DIR", str(tmp_path))
    stack_file = two_stage_stack(tiny_model_id).save(tmp_path / "stack.yaml")
    runner = CliRunner()
    command = ["run", "--stack", str(stack_file), "--json", "--stats", "--cache", "What is 2 + 2?"]
    first = runner.invoke(cli, command)
    assert first.exit_code == 0, first.output
    again = runner.invoke(cli, command)
    trace = json.loads(again.stdout)
    assert all(message["cached"] for message in trace["messages"])
    rows = {line.split()[0]: line.split() for line in again.stderr.splitlines() if line.strip()}
    assert rows["recall"][1:3] == ["1", "1"] and rows["total"][1:3] == ["2", "2"]  # runs, cached
