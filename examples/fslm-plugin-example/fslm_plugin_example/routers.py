"""A router: short prompts skip the helper stages and go straight to the final one."""

from __future__ import annotations

from fslm_core.api import Router


class SkipShortPrompts(Router):
    name = "skip-short"
    description = "Stages in declared order; prompts of fewer than 6 words run only the final stage."
    min_words = 6

    def __init__(self):
        # should_run sees a stage and a trace, not the stack: remember each stack's final stage
        # when the engine asks for its waves (always before any should_run).
        self.final_stage = {}

    def waves(self, stack):
        self.final_stage[stack.name] = stack.final_stage.name
        return super().waves(stack)

    def should_run(self, stage, trace):
        # A stage reading a skipped one sees "(none)" in its input.
        if stage.name == self.final_stage.get(trace.stack):
            return True
        return len(trace.prompt.split()) >= self.min_words
