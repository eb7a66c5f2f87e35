"""The ``fslm`` model's arguments as lm-eval hands them over: strings from its command line, values from Python."""

from __future__ import annotations

from typing import Any

from ..declarations import GenerationSettings
from ..errors import InputError
from ..runtime.stack_choice import StackArguments

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default for generate_until requests without max_gen_toks

LM_EVAL_ARGUMENTS = StackArguments(
    "stack=PATH", "decomposition=NAME", "model=ID", "model_path=PATH", "model_args: ", "model_args.decomposition"
)
"""How lm-eval's users write the ``model_args`` that choose a stack, so that errors name what they typed."""

# Arguments lm-eval's CLI may add to every model's arguments; meaningless for a stack.
IGNORED_MODEL_ARGS = frozenset({"trust_remote_code", "pretrained", "revision", "parallelize"})


def flag(value: bool | str, name: str) -> bool:
    """A yes/no model argument, also as lm-eval's command line passes it (a string)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise InputError(f"model_args.{name}: expected true or false, got {value!r}")


def parse_batch_size(batch_size: int | str | None, max_batch_size: int | str | None = None) -> int:
    """lm-eval's batch size argument as a number of inputs per backend call.

    ``auto`` (and ``auto:N``) take ``max_batch_size`` when given, else the
    default: a stack's stages have different input lengths, so there is no one
    largest batch to probe for.
    """
    if batch_size is None or str(batch_size).strip() == "":
        return DEFAULT_BATCH_SIZE
    text = str(batch_size).strip().lower()
    if text.startswith("auto"):
        return positive_int(max_batch_size, "max_batch_size") if max_batch_size else DEFAULT_BATCH_SIZE
    return positive_int(text, "batch_size")


def positive_int(value: Any, name: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InputError(f"{name}: expected a positive integer or 'auto', got {value!r}") from None
    if number < 1:
        raise InputError(f"{name}: expected a positive integer, got {number}")
    return number


def request_settings(current: GenerationSettings, gen_kwargs: dict) -> GenerationSettings:
    """The final stage's generation settings (``current``) with a request's stop strings, length and sampling."""
    from lm_eval.models.utils import normalize_gen_kwargs

    kwargs = normalize_gen_kwargs(dict(gen_kwargs or {}), DEFAULT_MAX_GEN_TOKS)
    until = kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    sampling = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature", 0.0)) > 0.0
    return GenerationSettings(
        max_new_tokens=int(kwargs["max_gen_toks"]),
        temperature=float(kwargs["temperature"]) if sampling else 0.0,
        top_p=float(kwargs.get("top_p", current.top_p)) if sampling else current.top_p,
        repetition_penalty=current.repetition_penalty,
        stop=tuple(stop for stop in until if stop),
    )
