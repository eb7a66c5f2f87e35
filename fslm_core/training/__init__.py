"""Training a stack: distil per-stage targets with a teacher, train one LoRA adapter per stage, score each stage.

Distillation: :mod:`.instruction_data` reads the examples, :mod:`.teacher`
writes each stage's target, :mod:`.shards` lays out the folder and
:mod:`.distillation` runs it all (resumably); :mod:`.distilled` reads the
result. Training: :mod:`.config`, :mod:`.examples` (split, pairs, batches),
:mod:`.loop` (one stage), :mod:`.checkpoints`, :mod:`.output` (the folder and
its resumable state), :mod:`.results`, and :mod:`.train` (the whole stack);
:mod:`.stage_evaluation` scores each stage on held-out examples.
"""

from .config import TrainConfig, load_train_config
from .distill_config import DistillConfig, DistillSummary, ShardWritten
from .distillation import distill
from .distilled import DistilledData, DistilledExample, load_distilled, targets_trace
from .examples import epoch_batches, process_share, split_examples, stage_pairs
from .filtered import filter_distilled
from .filters import FilterReport, filter_examples
from .instruction_data import InstructionData, InstructionExample, alpaca_prompt, read_instruction_data
from .loop import lora_config
from .results import StageTraining, TrainResult, TrainStep, weakest_stage
from .shards import MANIFEST, REFERENCE, TEACHER, shard_folders
from .stage_evaluation import StageEvalJob, evaluate_stages
from .teacher import teacher_instruction
from .train import is_main_process, train_stack

__all__ = [
    "MANIFEST",
    "REFERENCE",
    "TEACHER",
    "DistillConfig",
    "FilterReport",
    "DistillSummary",
    "DistilledData",
    "DistilledExample",
    "InstructionData",
    "InstructionExample",
    "ShardWritten",
    "StageEvalJob",
    "StageTraining",
    "TrainConfig",
    "TrainResult",
    "TrainStep",
    "alpaca_prompt",
    "distill",
    "epoch_batches",
    "evaluate_stages",
    "filter_distilled",
    "filter_examples",
    "is_main_process",
    "load_distilled",
    "load_train_config",
    "lora_config",
    "process_share",
    "read_instruction_data",
    "shard_folders",
    "split_examples",
    "stage_pairs",
    "targets_trace",
    "teacher_instruction",
    "train_stack",
    "weakest_stage",
]
