"""Experiments: the paper's pipeline (distil, filter, train, check, eval, report), and comparisons of declared
systems on the same documents.

The paper's: :mod:`.config` reads the YAML file, :mod:`.pipeline` runs the
steps, :mod:`.systems` names what is compared, :mod:`.stage_checks` checks
each stage's role on held-out examples, :mod:`.report` writes the Markdown
report. A comparison (``kind: comparison``): :mod:`.comparison_config`,
:mod:`.comparison` and :mod:`.comparison_report`. Both run their evals with
:mod:`.eval_runs` (one result file per system and task, with its
:mod:`.provenance`) and test pairs with :mod:`.comparisons`; :mod:`.verification` reruns finished
results and checks that every document's score reproduces.
"""

from .comparison import COMPARISON_STEPS, comparison_plan, run_comparison
from .comparison_config import ComparisonConfig, is_comparison, load_comparison_config
from .comparisons import PairedComparison, compare, mcnemar_exact, mean_and_stderr
from .config import QUICK, SYSTEMS, ExperimentConfig, load_experiment_config
from .pipeline import STEPS, Experiment, run_experiment
from .systems import paper_plan
from .verification import Verification, verify

__all__ = [
    "COMPARISON_STEPS",
    "QUICK",
    "STEPS",
    "SYSTEMS",
    "ComparisonConfig",
    "Experiment",
    "ExperimentConfig",
    "PairedComparison",
    "Verification",
    "compare",
    "comparison_plan",
    "is_comparison",
    "load_comparison_config",
    "load_experiment_config",
    "mcnemar_exact",
    "mean_and_stderr",
    "paper_plan",
    "run_comparison",
    "run_experiment",
    "verify",
]
