"""The remote backend: a stage's rows sent as concurrent requests to an inference server.

The base model's tokenizer and chat template are loaded locally (no weights),
so prompts are laid out and counted exactly as a local stage's; the server
holds the weights and the adapters and batches the requests that arrive
together. Rows go out at most ``concurrency`` at a time and come back in
order; the first row that fails stops the stage with an error naming the
server, and no partial result is returned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from fslm_core import Generation, ModelBackend, ModelSpec
from fslm_core.api.backends import logprob_summary
from fslm_core.declarations import GenerationSettings
from fslm_core.default_plugins.prompt_layout import encode_prompt, render_prompt, uses_chat_template
from fslm_core.errors import ModelLoadError

from .protocols import Protocol, protocol_for
from .targets import RemoteTarget, parse_target


class RemoteBackend(ModelBackend):
    """Stages on a llama.cpp, OpenAI-compatible or LoRAX server (see :mod:`fslm_plugin_remote.targets`)."""

    name = "remote"

    def __init__(self, spec: ModelSpec, target: RemoteTarget, protocol: Protocol, tokenizer, base: ModelSpec):
        super().__init__(spec)
        self.target = target
        self.server_adapter = target.adapter
        self.protocol = protocol
        self.tokenizer = tokenizer
        self.base = base
        self.uses_chat_template = uses_chat_template(base, tokenizer)

    @classmethod
    def load(cls, spec: ModelSpec) -> RemoteBackend:
        from fslm_core.plugins import get_registry

        target = parse_target(spec.id)
        base = get_registry().model(target.base, field=f"model {spec.id!r}: base")
        protocol = protocol_for(target)
        protocol.check()  # the server is up and knows the adapter, before any stage runs
        from fslm_core.default_plugins.transformers_loading import load_tokenizer  # torch: only when a stage loads

        return cls(spec, target, protocol, load_tokenizer(base), base)

    def attach_adapter(self, path: Path) -> str:
        raise ModelLoadError(
            f"model {self.spec.id!r}: a remote stage names its adapter as the server spells it, in its model id "
            f"(adapter=...), not as a local folder ({path}); `fslm export` converts a stack's adapters"
        )

    def render_prompt(self, instruction: str, user_text: str) -> str:
        return render_prompt(self.base, self.tokenizer, self.uses_chat_template, instruction, user_text)

    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, self.uses_chat_template, text)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def generate(
        self,
        prompts: Sequence[str],
        adapters: Sequence[str | None],
        settings: GenerationSettings,
        batch_size: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        if any(adapter is not None for adapter in adapters):
            raise ModelLoadError(f"model {self.spec.id!r}: remote stages take no local adapter")
        from fslm_core.runtime.decoding import cut_at_stop

        started = time.perf_counter()
        encoded = [self.encode(prompt) for prompt in prompts]

        completions: list = [None] * len(prompts)
        failed = threading.Event()

        def one(index: int):
            if failed.is_set():
                return None  # a row before it failed: the stage ends, this row is not sent
            try:
                return self.protocol.complete(encoded[index], prompts[index], settings)
            except BaseException:
                failed.set()
                raise

        pool = ThreadPoolExecutor(max_workers=min(self.target.concurrency, max(len(prompts), 1)))
        try:
            futures = {pool.submit(one, index): index for index in range(len(prompts))}
            # Progress is reported from this thread, one row at a time, so its counters need no lock.
            for future in as_completed(futures):
                completions[futures[future]] = future.result()  # the first failure ends the stage here
                if on_batch is not None:
                    on_batch(1)
        finally:
            # Rows not started yet are dropped rather than each waiting out its retries.
            pool.shutdown(wait=True, cancel_futures=True)
        elapsed = time.perf_counter() - started
        return [
            Generation(
                text=cut_at_stop(completion.text, settings.stop).strip(),
                prompt_tokens=len(ids),
                completion_tokens=completion.completion_tokens,
                latency_s=elapsed,
                batch_size=len(prompts),
                **logprob_summary(completion.logprobs),
            )
            for ids, completion in zip(encoded, completions)
        ]
