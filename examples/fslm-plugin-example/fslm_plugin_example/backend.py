"""A backend that needs no weights: each stage "generates" its own input, on one line.

A real backend (llama.cpp, an inference server...) has the same shape: load
the base once in ``load``, keep adapters by name, and answer whole batches in
``generate``. This one makes stacks testable in milliseconds: it ignores
instructions and writes back what the stage was given, so every hand-off
between stages shows in the trace.
"""

from __future__ import annotations

import time
from pathlib import Path

from fslm_core import Generation, ModelBackend, ModelSpec

ECHO_MODEL = ModelSpec(
    id="echo",
    backend="echo",
    source="builtin",  # anything but None: there are no weights to install
    chat_template=False,
    description="Writes back its input on one line (no weights; for trying stacks and plugins)",
)


class EchoBackend(ModelBackend):
    name = "echo"

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.adapters: dict[Path, str] = {}

    @classmethod
    def load(cls, spec: ModelSpec) -> EchoBackend:
        return cls(spec)

    def attach_adapter(self, path: Path) -> str:
        # Nothing to load; still return one stable name per adapter folder, as the engine expects.
        return self.adapters.setdefault(Path(path).resolve(), f"echo-{len(self.adapters)}")

    def render_prompt(self, instruction: str, user_text: str) -> str:
        return user_text  # an echo follows no instruction

    def generate(self, prompts, adapters, settings, batch_size, on_batch=None):
        started = time.perf_counter()
        results = []
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            for prompt in batch:
                words = prompt.split()[: settings.max_new_tokens]
                text = " ".join(words)
                for stop in settings.stop:
                    text = text.split(stop, 1)[0]
                results.append(
                    Generation(
                        text=text,
                        prompt_tokens=self.count_tokens(prompt),
                        completion_tokens=len(words),
                        latency_s=time.perf_counter() - started,
                        batch_size=len(batch),
                    )
                )
            if on_batch is not None:
                on_batch(len(batch))
        return results

    def count_tokens(self, text: str) -> int:
        return len(text.split())
