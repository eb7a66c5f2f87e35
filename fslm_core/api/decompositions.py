"""Task decompositions: recipes that turn a task into stages.

A decomposition knows, for each stage, the prompt the stage runs with and the
prompt a teacher model uses to write that stage's training target. ``build``
makes a ready :class:`~fslm_core.Stack` for any model id, with or
without trained adapters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..declarations import GenerationSettings, Stack, Stage
from ..errors import DeclarationError


@dataclass(frozen=True)
class StageRecipe:
    """One stage of a decomposition.

    ``teacher_instruction`` asks a teacher model for this stage's target
    message given an instruction-data example; None means the target is the
    example's reference output (the final stage).
    """

    name: str
    instruction: str
    template: str | None = None
    reads: tuple[str, ...] = ()
    format: str = "text"
    max_new_tokens: int = 128
    teacher_instruction: str | None = None


@dataclass(frozen=True)
class Decomposition:
    name: str
    description: str
    stages: tuple[StageRecipe, ...]
    router: str = "sequential"
    generation_defaults: Mapping[str, object] = field(default_factory=dict)

    def build(
        self,
        model: str,
        adapters: Mapping[str, str | Path] | None = None,
        name: str | None = None,
        model_path: str | Path | None = None,
    ) -> Stack:
        """A stack of this decomposition's stages, all on ``model``.

        ``adapters`` maps stage names to PEFT adapter folders; stages not in it
        run the plain base model.
        """
        adapters = dict(adapters or {})
        unknown = set(adapters) - {recipe.name for recipe in self.stages}
        if unknown:
            raise DeclarationError(f"adapters: no stage named {sorted(unknown)} in decomposition {self.name!r}")
        stages = [
            Stage(
                name=recipe.name,
                model=model,
                model_path=model_path,
                adapter=adapters.get(recipe.name),
                instruction=recipe.instruction,
                template=recipe.template,
                reads=recipe.reads,
                format=recipe.format,
                generation=GenerationSettings(max_new_tokens=recipe.max_new_tokens, **dict(self.generation_defaults)),
            )
            for recipe in self.stages
        ]
        return Stack(
            name=name or f"{self.name}:{model}", description=self.description, stages=stages, router=self.router
        )
