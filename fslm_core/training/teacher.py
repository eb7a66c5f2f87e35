"""The teacher: a model that writes each stage's target for instruction-data examples, stage by stage."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..api.decompositions import Decomposition, StageRecipe
from ..api.formats import MessageFormat
from ..declarations import GenerationSettings
from ..plugins import Registry
from ..runtime.engine import bind_stack, stage_input
from ..runtime.pool import ModelPool
from .distill_config import DistillConfig
from .distilled import targets_trace
from .instruction_data import InstructionExample
from .shards import REFERENCE, TEACHER


def teacher_instruction(recipe: StageRecipe, message_format: MessageFormat) -> str:
    """The teacher's instruction for a stage, plus what the stage's format asks of the layout."""
    if message_format.instructions:
        return f"{recipe.teacher_instruction} {message_format.instructions}"
    return recipe.teacher_instruction or ""


class Teacher:
    """The teacher model bound to a decomposition's stages."""

    def __init__(self, config: DistillConfig, decomposition: Decomposition, registry: Registry, pool: ModelPool):
        self.config = config
        self.recipes = decomposition.stages
        self.stack = decomposition.build(config.teacher, model_path=config.teacher_model_path, name=decomposition.name)
        self.bound = bind_stack(self.stack, registry, pool)
        self.formats = self.bound.formats
        self.generating_stages = sum(1 for recipe in self.recipes if recipe.teacher_instruction)
        if config.seed is not None:
            from transformers import set_seed

            set_seed(config.seed)

    def settings(self, recipe: StageRecipe, stage_settings: GenerationSettings) -> GenerationSettings:
        if self.config.max_new_tokens is None:
            return stage_settings
        limit = min(stage_settings.max_new_tokens, self.config.max_new_tokens)
        return stage_settings.model_copy(update={"max_new_tokens": limit})

    def targets(self, examples: Sequence[InstructionExample], on_batch: Callable[[int], None]) -> list[dict]:
        """Rows (example, stage) with the stage's input and target, all stages in order."""
        targets: list[dict[str, str]] = [{} for _ in examples]
        rows: list[dict] = []
        for stage_index, (recipe, stage) in enumerate(zip(self.recipes, self.stack.stages, strict=True)):
            traces = [
                targets_trace(self.stack.name, example.prompt, done, self.formats, self.config.teacher)
                for example, done in zip(examples, targets)
            ]
            inputs = [stage_input(stage, trace, self.formats) for trace in traces]
            if recipe.teacher_instruction is None:
                texts, source = [example.output.strip() for example in examples], REFERENCE
            else:
                item = self.bound.stages[stage.name]
                instruction = teacher_instruction(recipe, item.format)
                generations = item.backend.generate(
                    [item.backend.render_prompt(instruction, text) for text in inputs],
                    [None] * len(inputs),
                    self.settings(recipe, stage.generation),
                    self.config.batch_size,
                    on_batch=on_batch,
                )
                texts, source = [generation.text.strip() for generation in generations], TEACHER
            for example, done, text, stage_text in zip(examples, targets, texts, inputs):
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
                    }
                )
        return rows
