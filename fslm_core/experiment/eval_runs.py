"""The evaluation step: every system on every task, zero-shot, on the same documents, one result file each.

Documents: all of a task's slice when it is small, else a seeded subset (the
same for every system). Each (system, task) result is written atomically when
it finishes, so an interrupted evaluation resumes with the pairs it has not
done. A result holds every document's score, so systems can be compared
document by document.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..declarations import Stack
from ..errors import InputError
from ..files import atomic_write_json, safe_file_name
from ..lmeval import EvalSettings, FslmLM, run_task, task_manager
from .provenance import provenance, reusable_settings

EVAL_DIR = "eval"
METRIC_PREFERENCE = ("acc_norm", "acc", "exact_match")
"""The metric reported per task: the first the task computes (tinyBenchmarks use acc_norm where it exists)."""
GENERATION_FILTER = "flexible-extract"
"""Zero-shot answers rarely end in GSM8K's "#### N"; the last number of the answer is scored."""


def result_path(output: Path, system: str, task: str) -> Path:
    return output / EVAL_DIR / system / f"{safe_file_name(task)}.json"


def read_result(output: Path, system: str, task: str) -> dict | None:
    path = result_path(output, system, task)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def upstream_per_option(result: dict) -> bool:
    """Whether a stack's result ran its upstream stages once per option of a document (a partial-scoring
    task, before fslm ran them once per document): its options were scored after different notes, so the
    result is not comparable with another system's."""
    cost = result.get("cost", {})
    if not cost.get("upstream_stages"):
        return False
    once = cost.get("upstream_once_per_document")
    if once is not None:
        return not once
    # Results written before the flag: their sample traces show one trace per option.
    return any(len(document.get("traces", [])) > 1 for document in result.get("sample_traces", []))


@dataclass(frozen=True)
class EvalPlan:
    """What the eval step runs: each system (a name and how to build its stack) on each task.

    Documents: a task's ``document_ranges`` entry (``[start, stop)`` ids) if it has one, else every
    document of a slice no larger than ``documents`` (``generation_documents`` for generate_until
    tasks), else a seeded subset that size, the same for every system.
    """

    systems: dict[str, Callable[[], Stack]]
    tasks: tuple[str, ...]
    seed: int = 0
    documents: int = 250
    generation_documents: int = 100
    document_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    batch_size: int = 16
    max_gen_toks: int | None = None
    num_fewshot: int = 0
    traces_per_task: int = 3
    dtype: str | None = None


def task_documents(task: str, plan: EvalPlan, manager) -> tuple[list[int], str, int, list[str]]:
    """The scored document ids of ``task`` (sorted), its output type, how many documents its slice has,
    and the data files it reads."""
    from lm_eval.tasks import get_task_dict

    loaded = get_task_dict([task], manager)[task]
    total = len(loaded.eval_docs)
    output_type = loaded.OUTPUT_TYPE
    kwargs = getattr(loaded.config, "dataset_kwargs", None) or {}
    # lm-eval's json loader names them data_files; fslm's benchmark tasks, fslm_files.
    data_files = kwargs.get("data_files") or kwargs.get("fslm_files") or {}
    if not isinstance(data_files, dict):
        data_files = {"data": data_files}
    files = sorted({str(path) for value in dict(data_files).values() for path in _as_list(value)})
    if task in plan.document_ranges:
        start, stop = plan.document_ranges[task]
        ids = list(range(max(0, start), min(stop, total)))
        if not ids:
            # lm-eval reads an empty selection as "every document": refuse it rather than score the slice.
            held = f"ids 0 to {total - 1}" if total else "it has none"
            raise InputError(
                f"document_ranges.{task}: [{start}, {stop}) holds none of the task's {total} documents ({held})"
            )
        return ids, output_type, total, files
    wanted = plan.generation_documents if output_type == "generate_until" else plan.documents
    if total <= wanted:
        return list(range(total)), output_type, total, files
    ids = sorted(random.Random(f"{plan.seed}:{task}").sample(range(total), wanted))
    return ids, output_type, total, files


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _metric(sample: dict) -> tuple[str, str | None]:
    """The reported metric of a logged sample, and the filter it was scored under."""
    for name in METRIC_PREFERENCE:
        if name in sample:
            return name, sample.get("filter")
    raise KeyError(f"no known metric in sample keys {sorted(sample)}")


def reported_samples(samples: list[dict]) -> list[dict]:
    """The logged samples the report reads: a generation task's under :data:`GENERATION_FILTER` only."""
    if GENERATION_FILTER in {sample.get("filter") for sample in samples}:
        return [sample for sample in samples if sample.get("filter") == GENERATION_FILTER]
    return samples


def document_scores(samples: list[dict]) -> tuple[str, dict[int, float]]:
    """Document id -> score under the reported metric (generation tasks: under :data:`GENERATION_FILTER`)."""
    samples = reported_samples(samples)
    metric, _ = _metric(samples[0])
    return metric, {int(sample["doc_id"]): float(sample[metric]) for sample in samples}


class Evaluator:
    """Runs the eval step; each system's model is built once and reused across tasks."""

    def __init__(self, plan: EvalPlan, output: Path, echo: Callable[[str], None]):
        self.plan = plan
        self.output = output
        self.echo = echo
        self.models: dict[str, FslmLM] = {}
        self.manager = task_manager(list(plan.tasks))

    def model(self, system: str) -> FslmLM:
        if system not in self.models:
            stack = self.plan.systems[system]()
            # No stage cache: each result's wall time and token counts are the system's own cost, even when
            # an interrupted run left some of its upstream stages' outputs in the cache.
            self.models[system] = FslmLM(
                stack=stack,
                batch_size=self.plan.batch_size,
                seed=self.plan.seed,
                stage_cache=False,
                dtype=self.plan.dtype,
            )
        return self.models[system]

    def run(self) -> None:
        pairs = [(system, task) for task in self.plan.tasks for system in self.plan.systems]
        documents = {task: task_documents(task, self.plan, self.manager) for task in self.plan.tasks}
        self.check_scorable(documents)
        finished = {pair: result for pair in pairs if (result := read_result(self.output, *pair)) is not None}
        for (system, task), earlier in finished.items():  # all of them before any eval, not one by one
            self.check_reusable(earlier, system, task, documents[task][0])
        for index, (system, task) in enumerate(pairs, start=1):
            where = f"  ({index}/{len(pairs)}) {system} on {task}"
            ids, output_type, total, data_files = documents[task]
            if (system, task) in finished:
                self.echo(f"{where}: done earlier")
                continue
            self.echo(f"{where}: {len(ids)} of {total} documents ...")
            self.model(system).load()  # loading is not part of a result's wall time
            started = time.perf_counter()
            result = self.evaluate(system, task, ids, output_type, total)
            result["wall_time_s"] = round(time.perf_counter() - started, 2)
            result["data_files"] = data_files
            result["provenance"] = provenance(self.model(system).stack, self.plan)
            atomic_write_json(result_path(self.output, system, task), result)
            self.echo(f"{where}: {result['metric']} {result['mean']:.4f} in {result['wall_time_s']:.0f}s")

    def check_reusable(self, earlier: dict, system: str, task: str, ids: list[int]) -> None:
        """Refuse a finished result that the plan would not produce now (other documents, stack, adapter
        weights or scoring settings): reusing it would compare systems on different terms, and evaluating
        again over it would lose it. What a result written by older code did not record is not compared."""
        stack = self.model(system).stack
        now = {"doc_ids": ids, "stack": stack.name, **reusable_settings(stack, self.plan)}
        recorded = {
            **earlier.get("provenance", {}),
            **{key: earlier[key] for key in ("doc_ids", "stack") if key in earlier},
        }
        changed = [key for key in now if key in recorded and recorded[key] != now[key]]
        if changed:
            names = {"doc_ids": "documents", "stack": "stack name", "adapters": "adapter weights"}
            raise InputError(
                f"systems.{system}: its finished result {result_path(self.output, system, task)} was made with "
                f"other {', '.join(names.get(key, key) for key in changed)} than this run asks for; move it "
                "aside to evaluate again, or give another output folder"
            )

    def check_scorable(self, documents: dict) -> None:
        """Refuse, before any eval, a system ending in a tool on a task scored by log-likelihoods."""
        for system, build in self.plan.systems.items():
            final = build().final_stage
            if final.tool is None:
                continue
            scored = [task for task, (_, output_type, _, _) in documents.items() if output_type != "generate_until"]
            if scored:
                raise InputError(
                    f"systems.{system}: its stack ends with a tool stage ({final.tool}), which gives no "
                    f"log-likelihoods; tasks {', '.join(scored)} need them (it can run generate_until tasks)"
                )

    def evaluate(self, system: str, task: str, ids: list[int], output_type: str, total: int) -> dict:
        lm = self.model(system)
        settings = EvalSettings(
            tasks=[task],
            num_fewshot=self.plan.num_fewshot,
            batch_size=str(self.plan.batch_size),
            log_samples=True,
            seed=self.plan.seed,
            samples={task: ids},
            gen_kwargs=f"max_gen_toks={self.plan.max_gen_toks}" if self.plan.max_gen_toks else None,
        )
        run = run_task(lm, task, self.manager, settings)
        samples = reported_samples((run.results or {}).get("samples", {}).get(task, []))
        metric, scores = document_scores(samples)
        # lm-eval numbers the chosen documents 0, 1, ... in its requests; its logged samples carry their ids.
        traces = [{**document, "doc_id": ids[document["doc_id"]]} for document in lm.document_traces(task)]
        cost = {**run.cost, **lm.task_cost(task, traces), **per_document_cost(traces)}
        values = list(scores.values())
        mean = sum(values) / len(values)
        keep = self.plan.traces_per_task if len(lm.stack.stages) > 1 else 0
        return {
            "system": system,
            "task": task,
            "stack": lm.stack.name,
            "output_type": output_type,
            "documents_in_slice": total,
            "doc_ids": ids,
            "metric": metric,
            "mean": mean,
            "scores": {str(doc_id): score for doc_id, score in sorted(scores.items())},
            "cost": cost,
            # Every document's confidence in its answer, and (for a cascade) who answered it: calibration
            # and the cascade report read them.
            "confidence": {str(doc["doc_id"]): doc["signals"] for doc in traces if "signals" in doc},
            # The stack's own answer (for a cascade, the one its deferral judged): an answer form reads it.
            "answers": {str(doc["doc_id"]): doc["answer"] for doc in traces if "answer" in doc},
            **({"paths": {str(doc["doc_id"]): doc["path"] for doc in traces}} if lm.stack.fallback else {}),
            "sample_traces": traces[:keep],
            "sample_answers": _answers(samples[:keep] if keep else samples[:3]),
        }


def _answers(samples: list[dict]) -> list[dict]:
    """What a few documents asked and what the system answered (generation) or chose (multiple choice)."""
    kept = []
    for sample in samples:
        kept.append(
            {
                "doc_id": sample.get("doc_id"),
                "target": str(sample.get("target", ""))[:300],
                "response": str(sample.get("filtered_resps", ""))[:300],
            }
        )
    return kept


def per_document_cost(documents: list[dict]) -> dict:
    """Tokens every stage wrote, and seconds spent in tool stages, per document (means over ``documents``)."""
    if not documents:
        return {}
    tokens = tool_seconds = 0.0
    for document in documents:
        for trace in document["traces"]:
            for message in trace["messages"]:
                tokens += message["completion_tokens"]
                if str(message.get("model", "")).startswith("tool:"):
                    tool_seconds += message["latency_s"] / max(message["batch_size"], 1)
    return {
        "tokens_per_document": round(tokens / len(documents), 1),
        "tool_seconds_per_document": round(tool_seconds / len(documents), 4),
    }
