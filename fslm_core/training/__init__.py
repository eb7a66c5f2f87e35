"""Training a stack on distilled targets: one LoRA adapter per stage, then each stage scored on held-out examples.

:mod:`.config` holds the settings, :mod:`.examples` splits the examples and
makes each stage's (input, target) pairs and batches, :mod:`.upstream` lets a
later stage read what trained earlier stages write, :mod:`.loop` trains one
stage, :mod:`.checkpoints` and :mod:`.output` make a run resumable,
:mod:`.results` is what it reports, :mod:`.train` trains the whole stack, and
:mod:`.stage_scores` scores each stage with the evaluators. Distilled data
comes from :mod:`fslm_core.distillation`.
"""

from .config import TrainConfig, load_train_config
from .examples import epoch_batches, process_share, split_examples, stage_pairs
from .loop import lora_config
from .results import StageTraining, TrainResult, TrainStep, weakest_stage
from .stage_scores import StageScoreJob, score_stages
from .train import is_main_process, train_stack

__all__ = [
    "StageScoreJob",
    "StageTraining",
    "TrainConfig",
    "TrainResult",
    "TrainStep",
    "epoch_batches",
    "is_main_process",
    "load_train_config",
    "lora_config",
    "process_share",
    "score_stages",
    "split_examples",
    "stage_pairs",
    "train_stack",
    "weakest_stage",
]
