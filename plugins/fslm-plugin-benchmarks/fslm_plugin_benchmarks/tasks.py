"""The local benchmark tasks: tinyBenchmarks' task formats over local data files.

Each task keeps the prompt, number of shots and metric of its tinyBenchmarks
counterpart (PIQA and BoolQ: of lm-eval's own tasks) and reports plain mean
accuracy: tinyBenchmarks' IRT estimators download a file at run time and are
fitted to their own 100-item sets, so they do not apply to other documents.

A task's config is built when the task is used, with absolute data paths; the
file a task scores is replaceable (``data_path``) by any file of the same format.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .data import read_json, read_mmlu_rows, resolve_data_path

EVAL_SPLIT = "test"
FEWSHOT_SPLIT = "train"
TAG = "local_tinybenchmarks"


@dataclass(frozen=True)
class LocalTask:
    """One lm-eval task over a local file.

    ``eval_file`` and ``fewshot_file`` are relative to the data folder; without
    a few-shot file, shots come from the scored file itself (lm-eval leaves the
    scored document out of its own shots).
    """

    name: str
    mirrors: str
    description: str
    output_type: str
    eval_file: str
    fewshot_file: str | None
    prompt: dict[str, Any]
    loader: Callable[..., Any] | None = None
    tags: tuple[str, ...] = field(default=(TAG,))

    def build_config(self, data_path: str | Path | None = None) -> dict[str, Any]:
        """The lm-eval task config, with absolute paths; ``data_path`` replaces the scored file."""
        files = {EVAL_SPLIT: str(resolve_data_path(self.eval_file, self.name, data_path))}
        if self.fewshot_file is not None:
            files[FEWSHOT_SPLIT] = str(resolve_data_path(self.fewshot_file, self.name))
        config: dict[str, Any] = {
            "task": self.name,
            "tag": list(self.tags),
            "output_type": self.output_type,
            "test_split": EVAL_SPLIT,
            "fewshot_split": FEWSHOT_SPLIT if self.fewshot_file is not None else EVAL_SPLIT,
            # A fresh copy: lm-eval updates configs in place (e.g. generation_kwargs from --gen_kwargs).
            **copy.deepcopy(self.prompt),
            "metadata": {"version": 1.0, "mirrors": self.mirrors, "local_files": files},
        }
        if self.fewshot_file is not None:
            config["training_split"] = FEWSHOT_SPLIT
        if self.loader is not None:
            config["custom_dataset"] = self.loader
            config["dataset_kwargs"] = {"data_files": files, "fslm_task": self.name}
        else:
            config["dataset_path"] = "json"
            config["dataset_kwargs"] = {"data_files": files}
        return config


# Document layouts: local files -> the fields the tinyBenchmarks prompts read ----


def arc_doc(doc: dict) -> dict:
    choices = doc["question"]["choices"]
    return {
        "id": doc["id"],
        "question": doc["question"]["stem"],
        "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
        "answerKey": doc["answerKey"],
    }


def arc_docs(dataset):
    return dataset.map(arc_doc, remove_columns=dataset.column_names)


def clean_hellaswag(text: str) -> str:
    """HellaSwag's WikiHow artefacts removed, as its lm-eval task does."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_doc(doc: dict) -> dict:
    # The local file's context already starts with the activity label.
    return {
        "query": clean_hellaswag(doc["ctx"]),
        "choices": [clean_hellaswag(ending) for ending in doc["endings"]],
        "gold": int(doc["label"]),
    }


def hellaswag_docs(dataset):
    return dataset.map(hellaswag_doc)


def winogrande_blank(doc: dict) -> int:
    return doc["sentence"].index("_")


def winogrande_context_index(doc: dict) -> int:
    """Partial scoring: the task has one context per option; this is the right one's index."""
    return {"1": 0, "2": 1}[str(doc["answer"])]


def winogrande_continuation(doc: dict) -> str:
    return doc["sentence"][winogrande_blank(doc) + 1 :].strip()


def winogrande_contexts(doc: dict) -> list[str]:
    prefix = doc["sentence"][: winogrande_blank(doc)]
    return [prefix + doc["option1"], prefix + doc["option2"]]


def boolq_target(doc: dict) -> int:
    return 1 if str(doc["label"]).strip().lower() in ("true", "1") else 0


def _ordered_targets(targets: dict[str, int]) -> dict[str, list]:
    """TruthfulQA's {answer: 0/1} as choices and labels, true answers first (their order kept)."""
    ordered = sorted(targets.items(), key=lambda item: -int(item[1]))
    return {"choices": [answer for answer, _ in ordered], "labels": [int(label) for _, label in ordered]}


def load_truthfulqa(data_files: dict[str, str], fslm_task: str = "local_truthfulqa", **_ignored):
    """TruthfulQA's mc_task.json (a JSON list) as an lm-eval dataset."""
    from datasets import Dataset, DatasetDict

    items = read_json(Path(data_files[EVAL_SPLIT]), fslm_task)
    rows = [
        {
            "question": item["question"],
            "mc1_targets": _ordered_targets(item["mc1_targets"]),
            "mc2_targets": _ordered_targets(item["mc2_targets"]),
        }
        for item in items
    ]
    return DatasetDict({EVAL_SPLIT: Dataset.from_list(rows)})


def truthfulqa_mc2_results(doc: dict, results) -> dict[str, float]:
    """MC2: the probability mass of the true answers among all answers."""
    loglikelihoods = [loglikelihood for loglikelihood, _ in results]
    labels = doc["mc2_targets"]["labels"]
    top = max(loglikelihoods)  # shift before exp so long answers do not underflow to 0/0
    masses = [math.exp(value - top) for value in loglikelihoods]
    true_mass = sum(mass for mass, label in zip(masses, labels) if label == 1)
    return {"acc": true_mass / sum(masses)}


def load_mmlu(data_files: dict[str, str], fslm_task: str = "local_mmlu", **_ignored):
    """MMLU csv files (one per subject, subject in the file name) as an lm-eval dataset."""
    from datasets import Dataset, DatasetDict

    splits = {split: Dataset.from_list(read_mmlu_rows(Path(path), fslm_task)) for split, path in data_files.items()}
    return DatasetDict(splits)


# Prompts and metrics ----------------------------------------------------------

ACC_NORM = [{"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]
ACC = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]

ARC_PROMPT = {
    "num_fewshot": 25,
    "process_docs": arc_docs,
    "doc_to_text": "Question: {{question}}\nAnswer:",
    "doc_to_target": "{{choices.label.index(answerKey)}}",
    "doc_to_choice": "{{choices.text}}",
    "metric_list": ACC_NORM,
}

TRUTHFULQA_PRIMER = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain."
)
def truthfulqa_text(doc: dict) -> str:
    return f"{TRUTHFULQA_PRIMER}\n\nQ: {doc['question']}\nA:"


GSM8K_PROMPT = {
    "num_fewshot": 5,
    "doc_to_text": "Question: {{question}}\nAnswer:",
    "doc_to_target": "{{answer}}",
    "generation_kwargs": {
        "until": ["Question:", "</s>", "<|im_end|>"],
        "do_sample": False,
        "temperature": 0.0,
    },
    "repeats": 1,
    "metric_list": [
        {
            "metric": "exact_match",
            "aggregation": "mean",
            "higher_is_better": True,
            "ignore_case": True,
            "ignore_punctuation": False,
            "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"],
        }
    ],
    "filter_list": [
        {
            "name": "strict-match",
            "filter": [
                {"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                {"function": "take_first"},
            ],
        },
        {
            "name": "flexible-extract",
            "filter": [
                {"function": "regex", "group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                {"function": "take_first"},
            ],
        },
    ],
}

LOCAL_TASKS: tuple[LocalTask, ...] = (
    LocalTask(
        name="local_arc_easy",
        mirrors="tinyArc",
        description="ARC-Easy dev, tinyArc format (25-shot from ARC-Easy train, acc_norm)",
        output_type="multiple_choice",
        eval_file="arc/ARC-Easy-Dev.jsonl",
        fewshot_file="arc/ARC-Easy-Train.jsonl",
        prompt=ARC_PROMPT,
    ),
    LocalTask(
        name="local_arc_challenge",
        mirrors="tinyArc",
        description="ARC-Challenge dev, tinyArc format (25-shot from ARC-Challenge train, acc_norm)",
        output_type="multiple_choice",
        eval_file="arc/ARC-Challenge-Dev.jsonl",
        fewshot_file="arc/ARC-Challenge-Train.jsonl",
        prompt=ARC_PROMPT,
    ),
    LocalTask(
        name="local_mmlu",
        mirrors="tinyMMLU",
        description="MMLU, all subjects in one task, tinyMMLU format (0-shot, letter choices, acc_norm)",
        output_type="multiple_choice",
        eval_file="mmlu/dev",
        fewshot_file=None,
        loader=load_mmlu,
        prompt={
            "num_fewshot": 0,
            "description": "The following are multiple choice questions (with answers) about "
            "{{subject.replace('_', ' ')}}.\n\n",
            "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}"
            "\nD. {{choices[3]}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "answer",
            "metric_list": ACC_NORM,
        },
    ),
    LocalTask(
        name="local_hellaswag",
        mirrors="tinyHellaswag",
        description="HellaSwag validation, tinyHellaswag format (10-shot, acc_norm)",
        output_type="multiple_choice",
        eval_file="hellaswag/val_first500.jsonl",
        fewshot_file=None,
        prompt={
            "num_fewshot": 10,
            "process_docs": hellaswag_docs,
            "doc_to_text": "{{query}}",
            "doc_to_target": "{{label}}",
            "doc_to_choice": "choices",
            "metric_list": ACC_NORM,
        },
    ),
    LocalTask(
        name="local_winogrande",
        mirrors="tinyWinogrande",
        description="WinoGrande dev, tinyWinogrande format (5-shot, partial scoring, acc_norm)",
        output_type="multiple_choice",
        eval_file="winogrande/dev_first267.jsonl",
        fewshot_file=None,
        prompt={
            "num_fewshot": 5,
            "doc_to_text": winogrande_context_index,
            "doc_to_target": winogrande_continuation,
            "doc_to_choice": winogrande_contexts,
            "metric_list": ACC_NORM,
        },
    ),
    LocalTask(
        name="local_truthfulqa_mc1",
        mirrors="tinyTruthfulQA_mc1",
        description="TruthfulQA MC1, tinyTruthfulQA format (0-shot after the QA primer, acc)",
        output_type="multiple_choice",
        eval_file="truthfulqa/mc_task_dev100.json",
        fewshot_file=None,
        loader=load_truthfulqa,
        prompt={
            "num_fewshot": 0,
            "doc_to_text": truthfulqa_text,
            "doc_to_target": 0,
            "doc_to_choice": "{{mc1_targets.choices}}",
            "metric_list": ACC,
        },
    ),
    LocalTask(
        name="local_truthfulqa_mc2",
        mirrors="tinyTruthfulQA",
        description="TruthfulQA MC2, tinyTruthfulQA format (0-shot after the QA primer, true-answer mass)",
        output_type="multiple_choice",
        eval_file="truthfulqa/mc_task_dev100.json",
        fewshot_file=None,
        loader=load_truthfulqa,
        prompt={
            "num_fewshot": 0,
            "doc_to_text": truthfulqa_text,
            "doc_to_target": 0,
            "doc_to_choice": "{{mc2_targets.choices}}",
            "process_results": truthfulqa_mc2_results,
            "metric_list": ACC,
        },
    ),
    LocalTask(
        name="local_gsm8k",
        mirrors="tinyGSM8k",
        description="GSM8K, tinyGSM8k format (5-shot, generate until 'Question:', exact match on the number)",
        output_type="generate_until",
        eval_file="gsm8k/train.jsonl",
        fewshot_file=None,
        prompt=GSM8K_PROMPT,
    ),
    LocalTask(
        name="local_piqa",
        mirrors="piqa",
        description="PIQA validation, lm-eval's piqa format (0-shot, acc and acc_norm)",
        output_type="multiple_choice",
        eval_file="piqa/valid_first338.jsonl",
        fewshot_file=None,
        prompt={
            "num_fewshot": 0,
            "doc_to_text": "Question: {{goal}}\nAnswer:",
            "doc_to_target": "label",
            "doc_to_choice": "{{[sol1, sol2]}}",
            "metric_list": ACC + ACC_NORM,
        },
    ),
    LocalTask(
        name="local_boolq",
        mirrors="boolq",
        description="BoolQ validation, lm-eval's boolq format (0-shot, yes/no, acc)",
        output_type="multiple_choice",
        eval_file="boolq/val_first270.jsonl",
        fewshot_file=None,
        prompt={
            "num_fewshot": 0,
            "doc_to_text": "{{passage}}\nQuestion: {{question}}?\nAnswer:",
            "doc_to_target": boolq_target,
            "doc_to_choice": ["no", "yes"],
            "metric_list": ACC,
        },
    ),
)


def local_task(name: str) -> LocalTask:
    for task in LOCAL_TASKS:
        if task.name == name:
            return task
    raise KeyError(name)
