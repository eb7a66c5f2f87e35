"""Declarations: what a user writes to describe a stack (a stage's own settings are in :mod:`.stage_settings`).

A :class:`Stack` is a named list of :class:`Stage` s. It validates on its own
(names, references between stages, template fields, paths); whether the model
ids, formats and router it names are installed is checked when it runs, since
that depends on the plugins of the machine running it.

A stack saves as a YAML file, or as a folder holding ``stack.yaml`` and, by
convention, one PEFT adapter folder per stage under ``adapters/``. Paths inside
the folder are written relative to it, so the folder can be moved or shared.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import InputError, StackFileError
from .files import atomic_write_text
from .stage_settings import PROMPT_FIELD, Condition, Dispatch, Fallback, GenerationSettings, Vote
from .validation import validate_settings

if TYPE_CHECKING:
    from .messages import Trace

STACK_FILE_NAME = "stack.yaml"
STACK_FORMAT_VERSION = 1
_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
DtypeSetting = Literal["auto", "float32", "bfloat16", "int8"]
DTYPE_SETTINGS: tuple[str, ...] = get_args(DtypeSetting)
"""What a stack's ``dtype``, ``--dtype`` and lm-eval's ``dtype=`` accept; ``auto`` is decided per machine.

``int8`` is float32 with the linear layers' products in int8 (the model spec's
``quantize: int8``): faster on CPUs without native bf16, at a measured cost in
accuracy (``docs/performance.md``)."""
ParseErrorPolicy = Literal["keep-text", "empty", "fail"]


# Declarations sit below the engine and cannot import it; the engine installs itself here when imported
# (importing any part of fslm_core imports it), so `Stack.run` works without a cycle.
_stack_runner: Callable[..., list[Trace]] | None = None


def set_stack_runner(runner: Callable[..., list[Trace]]) -> None:
    """Make :meth:`Stack.run` call ``runner(stack, prompts, **options)``."""
    global _stack_runner
    _stack_runner = runner


def _resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths resolve against the stack file's folder when loading, else the cwd."""
    if value is None:
        return None
    base = (info.context or {}).get("base_dir")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(base or os.getcwd()) / path
    return path.resolve()


_DEFAULT = GenerationSettings()


class Stage(BaseModel):
    """One small LM doing one sub-step, handing natural language to the next; or a tool doing it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_PATTERN, description="Unique within the stack; other stages read it by this name.")
    model: str | None = Field(
        default=None,
        min_length=1,
        description="A registered model id (see `fslm plugins`) or `hf:<path-or-id>`; None for a tool stage.",
    )
    tool: str | None = Field(
        default=None,
        min_length=1,
        description="A registered tool (see `fslm plugins`) this stage runs instead of a model.",
    )
    tool_options: dict[str, Any] = Field(default_factory=dict, description="Options of the stage's tool.")
    model_path: Path | None = Field(
        default=None, description="Local folder overriding where the model's weights are read."
    )
    adapter: Path | None = Field(default=None, description="PEFT LoRA adapter folder; None runs the plain base model.")
    instruction: str = Field(
        default="", description="What this stage must do (the system / instruction text); model stages need one."
    )
    template: str | None = Field(
        default=None,
        description="Layout of the stage's input with {prompt} and {<stage name>} fields; "
        "None lists the prompt and each read message under a heading.",
    )
    reads: tuple[str, ...] = Field(default=(), description="Names of earlier stages whose messages this stage sees.")
    format: str = Field(default="text", description="Registered message format of this stage's output.")
    json_schema: dict[str, Any] | None = Field(
        default=None,
        description="JSON schema (an object's) the output must satisfy; for formats that take one, such as json.",
    )
    enforce_format: bool = Field(
        default=True,
        description="Hold the output to its format while decoding (structured formats); false only asks for it "
        "in the instruction.",
    )
    on_parse_error: ParseErrorPolicy = Field(
        default="keep-text",
        description="When the output does not parse: keep-text (readers get the raw text), empty (readers get "
        "nothing) or fail (the run stops). The trace keeps the raw text and the error either way.",
    )
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    run_if: Condition | None = Field(
        default=None, description="Run this stage only for inputs where this holds (router: conditional)."
    )
    exit_if: Condition | None = Field(
        default=None,
        description="After this stage, inputs where this holds leave the stack with this stage's message as "
        "their answer (router: early-exit).",
    )
    samples: int = Field(
        default=1, ge=1, le=64, description="Outputs sampled per input; more than one needs a vote and a temperature."
    )
    vote: Vote | None = Field(default=None, description="How one of the samples is kept (with samples > 1).")

    _resolve_paths = field_validator("adapter", "model_path")(_resolve_path)

    @field_validator("adapter")
    @classmethod
    def _adapter_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not (value / "adapter_config.json").is_file():
            if not value.exists():
                raise ValueError(f"adapter folder does not exist: {value}")
            raise ValueError(f"not a PEFT adapter folder (no adapter_config.json): {value}")
        return value

    @field_validator("template")
    @classmethod
    def _template_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                template_fields(value)
            except ValueError as error:
                raise ValueError(f"template does not parse: {error}") from None
        return value

    @field_validator("json_schema")
    @classmethod
    def _schema_describes_an_object(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Whether the schema compiles is checked when the stack is bound, by the library that enforces it.
        if value is None:
            return value
        try:
            json.dumps(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"not JSON: {error}") from None
        if value.get("type", "object") != "object":
            raise ValueError(f"must describe a JSON object (type: object), not type {value.get('type')!r}")
        for key in ("properties", "required"):
            expected = dict if key == "properties" else list
            if key in value and not isinstance(value[key], expected):
                raise ValueError(f"{key} must be {'a mapping' if expected is dict else 'a list'}")
        return value

    @field_validator("instruction")
    @classmethod
    def _model_stages_need_an_instruction(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("tool") is None and not value.strip():
            raise ValueError("a model stage needs an instruction (what this stage must do)")
        return value

    @field_validator("adapter", "model_path", "json_schema", "vote", "instruction", "format", "samples", "generation")
    @classmethod
    def _nothing_a_tool_cannot_use(cls, value: Any, info: ValidationInfo) -> Any:
        # Set on a tool stage, these would be silently ignored: refuse them instead.
        defaults = {"instruction": "", "format": "text", "samples": 1}
        given = value != defaults[info.field_name] if info.field_name in defaults else value is not None
        is_tool = info.data.get("tool") is not None and info.data.get("model") is None
        if is_tool and given and not (info.field_name == "generation" and value == _DEFAULT):
            raise ValueError("a tool stage has no model; remove it, or make the stage a model stage")
        return value

    @field_validator("tool_options")
    @classmethod
    def _options_belong_to_tools(cls, value: dict, info: ValidationInfo) -> dict:
        if value and info.data.get("tool") is None:
            raise ValueError("only a tool stage takes them")
        return value

    @model_validator(mode="after")
    def _model_or_tool(self) -> Stage:
        if (self.model is None) == (self.tool is None):
            raise ValueError("give either model (a model stage) or tool (a tool stage), not both or neither")
        if self.tool is None and not self.instruction.strip():
            raise ValueError("instruction: a model stage needs an instruction (what this stage must do)")
        if self.tool is None and self.samples > 1:
            if self.vote is None:
                raise ValueError("vote: a stage with samples > 1 needs a vote (e.g. vote: {by: number})")
            if self.generation.greedy:
                raise ValueError("samples: sampling needs generation.temperature above 0 (greedy samples are equal)")
        elif self.tool is None and self.vote is not None:
            raise ValueError("vote: only a stage with samples > 1 votes")
        return self

    @property
    def is_tool(self) -> bool:
        return self.tool is not None

    def input_fields(self) -> list[str]:
        """Names the stage's template fills: the prompt and the messages it reads."""
        return [PROMPT_FIELD, *self.reads]


def template_fields(template: str) -> set[str]:
    """Field names used by a ``str.format`` template (``{prompt}``, ``{recall}``...)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


class Stack(BaseModel):
    """A named chain of stages; the last stage writes the answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    stages: tuple[Stage, ...] = Field(min_length=1)
    router: str = Field(default="sequential", description="Registered router that schedules the stages.")
    dispatch: Dispatch | None = Field(
        default=None, description="A classifier stage choosing which stages run for each input (router: dispatch)."
    )
    dtype: DtypeSetting = Field(
        default="auto",
        description="What the stages' models compute in: float32, bfloat16, int8 (float32 with int8 linear "
        "layers, CPU only), or auto (float32 or bfloat16, whichever decodes faster on this machine, timed once "
        "and cached; a model whose plugin asks for another dtype keeps it).",
    )
    fallback: Fallback | None = Field(
        default=None,
        description="A cascade: inputs whose answer the stack is unsure of go to this stack or model instead.",
    )
    fslm_format: int = Field(default=STACK_FORMAT_VERSION, description="Version of the stack file layout.")
    _source: Path | None = PrivateAttr(default=None)  # the file it was loaded from: errors found later name it

    @property
    def source(self) -> Path | None:
        """The stack file this stack was loaded from, if it was."""
        return self._source

    def __eq__(self, other: object) -> bool:
        # Where a stack was loaded from is not what it is: the same stack from two files is equal.
        if not isinstance(other, Stack):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    @model_validator(mode="after")
    def _check_references(self) -> Stack:
        seen: set[str] = set()
        for index, stage in enumerate(self.stages):
            where = f"stages.{index}"
            if stage.name in seen:
                raise ValueError(f"{where}.name: duplicate stage name {stage.name!r}")
            if stage.name == PROMPT_FIELD:
                raise ValueError(f"{where}.name: {PROMPT_FIELD!r} is reserved for the user's prompt")
            for read in stage.reads:
                if read not in seen:
                    raise ValueError(
                        f"{where}.reads: {read!r} is not an earlier stage (earlier: {sorted(seen) or 'none'})"
                    )
            if stage.template is not None:
                unknown = template_fields(stage.template) - set(stage.input_fields())
                if unknown:
                    raise ValueError(
                        f"{where}.template: fields {sorted(unknown)} are neither 'prompt' "
                        f"nor in reads {list(stage.reads)}"
                    )
            if stage.run_if is not None and stage.run_if.stage not in seen | {PROMPT_FIELD}:
                raise ValueError(f"{where}.run_if.stage: {stage.run_if.stage!r} is not the prompt or an earlier stage")
            if stage.exit_if is not None and stage.exit_if.stage not in seen | {PROMPT_FIELD, stage.name}:
                raise ValueError(
                    f"{where}.exit_if.stage: {stage.exit_if.stage!r} is not the prompt, this stage or an earlier one"
                )
            seen.add(stage.name)
        if self.dispatch is not None:
            self._check_dispatch(self.dispatch)
        if self.fallback is not None and self.fallback.generation and self.fallback.generation.signal is not None:
            self._check_generation_signal(self.fallback.generation.signal)
        return self

    def _check_generation_signal(self, signal: str) -> None:
        # A tool's output is judged by the model-written message it ran (cascade.generation_signal).
        models = [stage for stage in self.stages if stage.tool is None]
        if not models:
            raise ValueError("fallback.generation: every stage is a tool, whose output has no log-probabilities")
        if signal == "agreement" and models[-1].samples < 2:
            raise ValueError(
                f"fallback.generation.signal: agreement needs the last model stage ({models[-1].name!r}) to "
                "sample several outputs and vote (samples > 1)"
            )

    @field_validator("fallback")
    @classmethod
    def _fallback_path(cls, value: Fallback | None, info: ValidationInfo) -> Fallback | None:
        # A fallback stack given as a path relative to the stack file is kept absolute, like adapter paths;
        # anything else is a stack's registered name, looked up when the stack runs.
        if value is None or value.stack is None:
            return value
        base = (info.context or {}).get("base_dir")
        path = Path(value.stack).expanduser()
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        if path.exists():
            return value.model_copy(update={"stack": str(path.resolve())})
        return value

    def _check_dispatch(self, dispatch: Dispatch) -> None:
        names = [stage.name for stage in self.stages]
        if dispatch.classifier not in names:
            raise ValueError(f"dispatch.classifier: no stage is called {dispatch.classifier!r}")
        after = set(names[names.index(dispatch.classifier) + 1 :])
        for label, stages in dispatch.routes.items():
            if not stages:
                raise ValueError(f"dispatch.routes.{label}: name at least one stage")
            for name in stages:
                if name not in after:
                    raise ValueError(
                        f"dispatch.routes.{label}: {name!r} is not a stage after the classifier {dispatch.classifier!r}"
                    )

    @property
    def final_stage(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def run(self, prompts: str | Sequence[str], **options: Any) -> list[Trace]:
        """Run the stack over prompts; see :func:`fslm_core.runtime.run_stack` for options."""
        if _stack_runner is None:
            raise RuntimeError("no engine to run stacks: import fslm_core")
        if isinstance(prompts, str):
            prompts = [prompts]
        return _stack_runner(self, prompts, **options)

    def to_yaml(self, relative_to: Path | None = None) -> str:
        """The stack as YAML; paths under ``relative_to`` are written relative to it."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        data = {"fslm_format": self.fslm_format, **data}
        if relative_to is not None:
            fallback = data.get("fallback") or {}
            if fallback.get("stack") and Path(fallback["stack"]).is_absolute():
                fallback["stack"] = _relative_if_inside(Path(fallback["stack"]), relative_to)
            for stage in data["stages"]:
                for key in ("adapter", "model_path"):
                    if key in stage:
                        stage[key] = _relative_if_inside(Path(stage[key]), relative_to)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the stack to a ``.yaml``/``.yml`` file, or to ``<folder>/stack.yaml``.

        The write is atomic: a reader sees the old file or the new one, never half.
        Returns the path of the written YAML file.
        """
        target = Path(path).expanduser().resolve()
        if target.suffix not in (".yaml", ".yml"):
            target.mkdir(parents=True, exist_ok=True)
            target = target / STACK_FILE_NAME
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, self.to_yaml(relative_to=target.parent))
        return target


def with_dtype(stack: Stack, dtype: str | None, field: str = "dtype") -> Stack:
    """``stack`` computing in ``dtype`` (None leaves its own); a value it does not know is an error naming ``field``."""
    if dtype is None:
        return stack
    if dtype not in DTYPE_SETTINGS:
        raise InputError(f"{field}: expected one of {', '.join(DTYPE_SETTINGS)}, got {dtype!r}")
    return stack if dtype == stack.dtype else stack.model_copy(update={"dtype": dtype})


def _relative_if_inside(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def stack_file_path(path: str | os.PathLike) -> Path:
    """The YAML file of a stack given as a file or a folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / STACK_FILE_NAME
    if not path.is_file():
        raise StackFileError(f"stack file not found: {path}")
    return path


def load_stack(path: str | os.PathLike) -> Stack:
    """Load a stack saved by :meth:`Stack.save` (a YAML file or a stack folder), or written as a ``.json`` file."""
    file = stack_file_path(path)
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise StackFileError(
                f"invalid stack file {file}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
            ) from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise StackFileError(f"invalid stack file {file}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise StackFileError(f"invalid stack file {file}: expected a mapping with 'name' and 'stages'")
    version = data.get("fslm_format", STACK_FORMAT_VERSION)
    if version != STACK_FORMAT_VERSION:
        raise StackFileError(
            f"invalid stack file {file}: fslm_format {version!r} is not supported "
            f"(this fslm reads {STACK_FORMAT_VERSION})"
        )
    stack = validate_stack(data, source=f"file {file}", base_dir=file.parent.resolve())
    stack._source = file
    return stack


def validate_stack(data: dict, source: str = "stack", base_dir: Path | None = None) -> Stack:
    """Build a Stack from plain data, turning validation errors into one line naming the field."""
    return validate_settings(
        Stack, data, f"invalid stack {source}", error=StackFileError, context={"base_dir": base_dir}
    )
