"""The teacher: a model that writes each stage's target for instruction-data examples.

Two ways, chosen by ``DistillConfig.teacher_prompt``:

* **per stage**: one call per stage, in stage order, on the stage's input as
  the engine builds it (earlier stages' targets standing in for their
  messages), with the recipe's ``teacher_instruction``;
* **notes**: one call per example that sees the reference answer and writes
  every intermediate stage's target at once (the decomposition's
  :class:`~fslm_core.api.TeacherNotes`), so the notes lead to the right answer.

A stage neither way covers (the final one) takes the reference output.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..api.decompositions import Decomposition, StageRecipe, TeacherNotes
from ..api.formats import MessageFormat
from ..declarations import GenerationSettings
from ..errors import InputError
from ..plugins import Registry
from ..runtime import bind_stack, stage_input
from ..runtime.pool import ModelPool
from .config import DistillConfig
from .distilled_data import targets_trace
from .instruction_data import InstructionExample
from .shards import REFERENCE, TEACHER


def teacher_instruction(recipe: StageRecipe, message_format: MessageFormat) -> str:
    """The teacher's instruction for a stage, plus what the stage's format asks of the layout."""
    if message_format.instructions:
        return f"{recipe.teacher_instruction} {message_format.instructions}"
    return recipe.teacher_instruction or ""


def teacher_notes(config: DistillConfig, decomposition: Decomposition) -> TeacherNotes | None:
    """The notes prompt this run uses, or None for one call per stage."""
    if config.teacher_prompt == "per-stage":
        return None
    if config.teacher_prompt == "notes" and decomposition.teacher_notes is None:
        raise InputError(
            f"teacher_prompt: decomposition {decomposition.name!r} has no teacher notes; use per-stage or auto"
        )
    return decomposition.teacher_notes


class Teacher:
    """The teacher model bound to a decomposition's stages."""

    def __init__(self, config: DistillConfig, decomposition: Decomposition, registry: Registry, pool: ModelPool):
        self.config = config
        self.recipes = decomposition.stages
        self.notes = teacher_notes(config, decomposition)
        self.stack = decomposition.build(config.teacher, model_path=config.teacher_model_path, name=decomposition.name)
        self.bound = bind_stack(self.stack, registry, pool)
        self.formats = self.bound.formats
        if self.notes is not None:
            self.generating_stages = 1
        else:
            self.generating_stages = sum(1 for recipe in self.recipes if recipe.teacher_instruction)
        if config.seed is not None:
            from transformers import set_seed

            set_seed(config.seed)

    def settings(self, base: GenerationSettings) -> GenerationSettings:
        """``base`` with the run's cap on new tokens, if it has one."""
        if self.config.max_new_tokens is None:
            return base
        return base.model_copy(update={"max_new_tokens": min(base.max_new_tokens, self.config.max_new_tokens)})

    def _notes(self, examples: Sequence[InstructionExample], on_batch: Callable[[int], None]) -> list[tuple]:
        """(targets by stage, reply, hit the limit) of each example, from one notes call each."""
        notes = self.notes
        backend = self.bound.stages[self.stack.stages[0].name].backend
        prompts = [
            backend.render_prompt(notes.instruction, notes.user_message(example.prompt, example.output))
            + notes.reply_start
            for example in examples
        ]
        settings = self.settings(GenerationSettings(max_new_tokens=notes.max_new_tokens))
        generations = backend.generate(
            prompts, [None] * len(prompts), settings, self.config.batch_size, on_batch=on_batch
        )
        results = []
        for generation in generations:
            # Text the decoder kept is stripped; a reply_start ending in a word needs its space back.
            reply = notes.reply_start + (" " if notes.reply_start[-1:].isalnum() else "") + generation.text
            results.append((notes.parse(reply), reply, generation.completion_tokens >= settings.max_new_tokens))
        return results

    def targets(self, examples: Sequence[InstructionExample], on_batch: Callable[[int], None]) -> list[dict]:
        """Rows (example, stage) with the stage's input and target, all stages in order."""
        noted = self._notes(examples, on_batch) if self.notes is not None else None
        targets: list[dict[str, str]] = [{} for _ in examples]
        rows: list[dict] = []
        for stage_index, (recipe, stage) in enumerate(zip(self.recipes, self.stack.stages, strict=True)):
            traces = [
                targets_trace(self.stack.name, example.prompt, done, self.formats, self.config.teacher)
                for example, done in zip(examples, targets)
            ]
            inputs = [stage_input(stage, trace, self.formats) for trace in traces]
            replies, limited = [""] * len(examples), [False] * len(examples)
            if noted is not None and stage.name in self.notes.stage_names:
                texts = [parsed.get(stage.name, "") for parsed, _, _ in noted]
                replies = [reply for _, reply, _ in noted]
                # Only the section the reply ended in can be cut off by the token limit.
                limited = [hit and list(parsed)[-1:] == [stage.name] for parsed, _, hit in noted]
                source = TEACHER
            elif noted is not None or recipe.teacher_instruction is None:
                texts, source = [example.output.strip() for example in examples], REFERENCE
            else:
                item = self.bound.stages[stage.name]
                instruction = teacher_instruction(recipe, item.format)
                settings = self.settings(stage.generation)
                generations = item.backend.generate(
                    [item.backend.render_prompt(instruction, text) for text in inputs],
                    [None] * len(inputs),
                    settings,
                    self.config.batch_size,
                    on_batch=on_batch,
                )
                texts, source = [generation.text.strip() for generation in generations], TEACHER
                replies = texts
                limited = [generation.completion_tokens >= settings.max_new_tokens for generation in generations]
            for example, done, text, stage_text, reply, hit in zip(examples, targets, texts, inputs, replies, limited):
                done[stage.name] = text
                rows.append(
                    {
                        "example_id": example.example_id,
                        "prompt": example.prompt,
                        "stage": stage.name,
                        "stage_index": stage_index,
                        "stage_input": stage_text,
                        "target": text,
                        "target_source": source,
                        "teacher": self.config.teacher if source == TEACHER else REFERENCE,
                        "teacher_reply": reply,
                        "hit_token_limit": hit,
                    }
                )
        return rows
