"""The local benchmark tasks: tinyBenchmarks' task formats over local data files.

Each task is one lm-eval task YAML in ``lm_eval_tasks/``, the folder lm-eval's
own command line reads with ``--include_path`` (``fslm tasks-dir`` prints it);
fslm builds its configs from the same files. Each keeps the prompt, number of
shots and metric of its tinyBenchmarks counterpart (PIQA and BoolQ: of
lm-eval's own tasks) and reports plain mean accuracy: tinyBenchmarks' IRT
estimators download a file at run time and are fitted to their own 100-item
sets, so they do not apply to other documents.

The functions below are what the YAML files name with ``!function``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from .data import resolve_data_path

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
EVAL_SPLIT = "test"
TAG = "local_tinybenchmarks"


class _PlainLoader(yaml.SafeLoader):
    """Reads a task YAML's names and files without importing lm-eval (every fslm command registers the tasks)."""


_PlainLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _read_yaml(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_PlainLoader)  # noqa: S506 - a SafeLoader


def _lm_eval_config(path: Path) -> dict[str, Any]:
    # lm-eval's own reader resolves `!function`, so fslm builds exactly what lm-eval's --include_path reads.
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=True)


@dataclass(frozen=True)
class LocalTask:
    """One lm-eval task over local files, defined by its YAML file in ``lm_eval_tasks/``.

    The YAML names its files relative to the data folder (``dataset_kwargs.fslm_files``,
    split name to path); the scored split is ``test``.
    """

    yaml_file: Path

    @cached_property
    def _plain(self) -> dict[str, Any]:
        return _read_yaml(self.yaml_file)

    @property
    def name(self) -> str:
        return self._plain["task"]

    @property
    def description(self) -> str:
        return self._plain["metadata"]["description"]

    @property
    def mirrors(self) -> str:
        return self._plain["metadata"]["mirrors"]

    @property
    def output_type(self) -> str:
        return self._plain["output_type"]

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self._plain.get("tag", ()))

    @property
    def files(self) -> dict[str, str]:
        """Split name -> path under the data folder."""
        return dict(self._plain["dataset_kwargs"]["fslm_files"])

    @property
    def eval_file(self) -> str:
        return self.files[EVAL_SPLIT]

    def build_config(self, data_path: str | Path | None = None) -> dict[str, Any]:
        """The task's lm-eval config with absolute data paths (checked now); ``data_path`` replaces the scored file.

        Each call reads the YAML anew: lm-eval updates configs in place (e.g.
        ``generation_kwargs`` from ``--gen_kwargs``).
        """
        config = _lm_eval_config(self.yaml_file)
        files = {
            split: str(resolve_data_path(path, self.name, data_path if split == EVAL_SPLIT else None))
            for split, path in self.files.items()
        }
        config["dataset_kwargs"]["fslm_files"] = files
        config["metadata"]["local_files"] = files
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


def truthfulqa_mc2_results(doc: dict, results) -> dict[str, float]:
    """MC2: the probability mass of the true answers among all answers."""
    loglikelihoods = [loglikelihood for loglikelihood, _ in results]
    labels = doc["mc2_targets"]["labels"]
    top = max(loglikelihoods)  # shift before exp so long answers do not underflow to 0/0
    masses = [math.exp(value - top) for value in loglikelihoods]
    true_mass = sum(mass for mass, label in zip(masses, labels) if label == 1)
    return {"acc": true_mass / sum(masses)}


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


LOCAL_TASKS: tuple[LocalTask, ...] = tuple(LocalTask(path) for path in sorted(TASKS_DIR.glob("*.yaml")))


def local_task(name: str) -> LocalTask:
    for task in LOCAL_TASKS:
        if task.name == name:
            return task
    raise KeyError(name)
