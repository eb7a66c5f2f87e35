"""Distillation: a teacher writes each stage's training target for instruction data, and bad targets are dropped.

:mod:`.instruction_data` reads the examples, :mod:`.teacher` writes each
stage's target, :mod:`.shards` lays out the folder, :mod:`.config` holds the
settings and :mod:`.distill` runs it all (resumably); :mod:`.distilled_data`
reads the result; :mod:`.given_targets` writes the same layout from targets
already written (a data set's own solutions). :mod:`.role_checks` checks that a target does its stage's
role, and :mod:`.filtering` writes a copy holding the examples that pass.
"""

from .config import DistillConfig, DistillSummary, ShardWritten
from .distill import distill
from .distilled_data import DistilledData, DistilledExample, load_distilled, targets_trace
from .filtering import filter_distilled
from .given_targets import write_given_targets
from .instruction_data import InstructionData, InstructionExample, alpaca_prompt, read_instruction_data
from .role_checks import FilterReport, filter_examples
from .shards import MANIFEST, REFERENCE, TEACHER, shard_folders
from .teacher import teacher_instruction

__all__ = [
    "MANIFEST",
    "REFERENCE",
    "TEACHER",
    "DistillConfig",
    "DistillSummary",
    "DistilledData",
    "DistilledExample",
    "FilterReport",
    "InstructionData",
    "InstructionExample",
    "ShardWritten",
    "alpaca_prompt",
    "distill",
    "filter_distilled",
    "filter_examples",
    "load_distilled",
    "read_instruction_data",
    "shard_folders",
    "targets_trace",
    "teacher_instruction",
    "write_given_targets",
]
