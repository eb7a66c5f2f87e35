"""Running stacks: loaded models, the engine, decoding on a CPU, and teacher-forced scoring.

Importing this package loads no model and imports no torch; :mod:`.decoding`,
:mod:`.cpu_tuning`, :mod:`.packed_linear`, :mod:`.int8_linear`, :mod:`.step_attention`
and :mod:`.devices` (which do) are imported by the backends that use them.
"""

from .binding import BoundStack, BoundStage, bind_stack, check_stack
from .devices import NATIVE_BF16_FLAGS, has_native_bf16
from .dtype_choice import AUTO_DTYPE_ENV, DtypeProbe, auto_dtype, choose_auto_dtype, dtype_probe
from .engine import check_prompts, run_stack
from .pool import (
    MODELS_DIR_ENV,
    ModelPool,
    check_installed,
    default_pool,
    in_dtype,
    local_folder_hint,
    local_model_folder,
    with_local_weights,
)
from .prompt_fitting import fit_stage_prompt, prompt_tokens, stage_budget
from .scoring import (
    IGNORE_INDEX,
    EncodedExample,
    active_adapter,
    collate,
    encode_example,
    mean_target_loss,
    micro_batches,
    require_tokenized_backend,
    target_loss,
)
from .stack_choice import (
    DEFAULT_DECOMPOSITION,
    DEFAULT_MODEL,
    StackArguments,
    resolve_stack,
    single_model_stack,
)
from .stage_inputs import MISSING_MESSAGE, default_template, render_stage_prompt, stage_input, stage_instruction

__all__ = [
    "DEFAULT_DECOMPOSITION",
    "DEFAULT_MODEL",
    "StackArguments",
    "resolve_stack",
    "single_model_stack",
    "AUTO_DTYPE_ENV",
    "DtypeProbe",
    "choose_auto_dtype",
    "dtype_probe",
    "IGNORE_INDEX",
    "MISSING_MESSAGE",
    "MODELS_DIR_ENV",
    "NATIVE_BF16_FLAGS",
    "BoundStack",
    "BoundStage",
    "EncodedExample",
    "ModelPool",
    "active_adapter",
    "auto_dtype",
    "bind_stack",
    "check_installed",
    "check_prompts",
    "check_stack",
    "collate",
    "default_pool",
    "default_template",
    "encode_example",
    "fit_stage_prompt",
    "has_native_bf16",
    "in_dtype",
    "local_folder_hint",
    "local_model_folder",
    "prompt_tokens",
    "mean_target_loss",
    "micro_batches",
    "render_stage_prompt",
    "require_tokenized_backend",
    "run_stack",
    "stage_budget",
    "stage_input",
    "stage_instruction",
    "target_loss",
    "with_local_weights",
]
