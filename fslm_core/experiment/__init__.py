"""Experiments: the paper's comparison as one resumable pipeline (distil, filter, train, check, evaluate, report).

:mod:`.config` reads the YAML file, :mod:`.pipeline` runs the steps,
:mod:`.systems` names what is compared, :mod:`.stage_checks` scores each
stage's role on held-out examples, :mod:`.evaluate` runs lm-eval per system
and task, :mod:`.stats` holds the paired tests and :mod:`.report` writes the
Markdown report.
"""

from .comparisons import PairedComparison, compare, mcnemar_exact, mean_and_stderr
from .config import QUICK, SYSTEMS, ExperimentConfig, load_experiment_config
from .pipeline import STEPS, Experiment, run_experiment

__all__ = [
    "QUICK",
    "STEPS",
    "SYSTEMS",
    "Experiment",
    "ExperimentConfig",
    "PairedComparison",
    "compare",
    "load_experiment_config",
    "mcnemar_exact",
    "mean_and_stderr",
    "run_experiment",
]
