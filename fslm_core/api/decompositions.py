"""Task decompositions: recipes that turn a task into stages.

A decomposition knows, for each stage, the prompt the stage runs with and how
a teacher model writes that stage's training target: one teacher call per
stage (``StageRecipe.teacher_instruction``), or one call per example that
writes every intermediate stage's target at once while seeing the reference
answer (:class:`TeacherNotes`). ``build`` makes a ready
:class:`~fslm_core.Stack` for any model id, with or without trained adapters.
"""

from __future__ import annotations

import re
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
    checks: tuple[str, ...] = ()
    """Names of role checks (``fslm_core.distillation.role_checks.ROLE_CHECKS``) this stage's text must pass, as a
    distilled target and as a trained stage's output: e.g. ``restates`` (does not answer) or ``is-list``."""


@dataclass(frozen=True)
class TeacherNotes:
    """One teacher call per example that writes the targets of several stages at once.

    The teacher sees the example's reference answer (the student never does),
    so the intermediate targets lead to the right answer instead of guessing
    it. Its reply is a labelled layout, one section per stage, which
    :meth:`parse` splits. ``reply_start`` is written into the reply before the
    teacher continues it: starting a teacher off inside the layout keeps it
    from answering the task outright.
    """

    instruction: str
    sections: tuple[tuple[str, str], ...]
    """(stage name, label) in the order the reply holds them; a section starts at ``LABEL:`` on a new line."""
    template: str = "Task:\n{prompt}\n\nFinal answer:\n{reference}"
    reply_start: str = ""
    max_new_tokens: int = 128
    reference_chars: int = 600
    """The reference answer shown to the teacher is cut to about this many characters (long essays add
    prompt cost and little guidance)."""
    end_markers: tuple[str, ...] = ()
    """Text after any of these in the last section is not part of it (a teacher that goes on to answer)."""

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage for stage, _ in self.sections)

    def user_message(self, prompt: str, reference: str) -> str:
        reference = reference.strip()
        if len(reference) > self.reference_chars:
            reference = reference[: self.reference_chars].rsplit(" ", 1)[0] + " ..."
        return self.template.format(prompt=prompt, reference=reference)

    def parse(self, reply: str) -> dict[str, str]:
        """Each stage's text in ``reply`` (which includes ``reply_start``); a stage whose label is missing is absent."""
        found = []
        position = 0
        for stage, label in self.sections:
            match = re.compile(rf"^[ \t*#]*{re.escape(label)}[ \t*]*:[ \t*]*", re.MULTILINE).search(reply, position)
            if match is None:
                continue
            found.append((stage, match.start(), match.end()))
            position = match.end()
        texts = {}
        for index, (stage, _, start) in enumerate(found):
            end = found[index + 1][1] if index + 1 < len(found) else len(reply)
            text = reply[start:end]
            if index + 1 == len(found):
                for marker in self.end_markers:
                    text = text.split(marker, 1)[0]
            texts[stage] = text.strip()
        return texts


@dataclass(frozen=True)
class Decomposition:
    name: str
    description: str
    stages: tuple[StageRecipe, ...]
    router: str = "sequential"
    generation_defaults: Mapping[str, object] = field(default_factory=dict)
    teacher_notes: TeacherNotes | None = None
    """When set, distillation writes the targets of the stages it names in one answer-aware call per example."""

    def __post_init__(self) -> None:
        if self.teacher_notes is not None:
            names = [recipe.name for recipe in self.stages]
            unknown = [stage for stage in self.teacher_notes.stage_names if stage not in names]
            if unknown:
                raise DeclarationError(f"decomposition {self.name!r}: teacher_notes name unknown stages {unknown}")

    def recipe(self, name: str) -> StageRecipe:
        for recipe in self.stages:
            if recipe.name == name:
                return recipe
        raise KeyError(name)

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
