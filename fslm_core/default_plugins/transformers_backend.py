"""Built-in backend: any causal LM that Hugging Face transformers loads.

Registers the ``transformers`` backend and resolves ``hf:<local folder or hub
id>`` model ids, so users can stack their own models without a plugin.
Adapters are attached with peft to the one loaded base; a batch whose inputs
use different adapters runs as one peft mixed-adapter batch.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..api.backends import Generation, ModelSpec, TokenizedBackend, logprob_summary
from ..api.formats import Constraint
from ..api.hookspecs import hookimpl
from ..declarations import GenerationSettings
from ..errors import AdapterError
from ..logs import get_logger
from .prompt_layout import encode_prompt, render_prompt, uses_chat_template

# torch, transformers and the decoding code that needs them are imported where a model is loaded or run,
# not here: every `fslm` command builds the plugin registry, and a name check or a listing should not
# wait seconds for torch to load.
if TYPE_CHECKING:
    import torch

    from ..runtime.format_masks import FormatCompiler

HF_PREFIX = "hf:"
BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in mixed-adapter batches

log = get_logger(__name__)


class TransformersBackend(TokenizedBackend):
    """A transformers causal LM with any number of peft LoRA adapters on it."""

    name = "transformers"
    streams_text = True
    enforces_formats = True

    def __init__(self, spec: ModelSpec, model, tokenizer, device: torch.device):
        super().__init__(spec)
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.adapter_names: dict[Path, str] = {}
        self.uses_chat_template = uses_chat_template(spec, tokenizer)
        eos = model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in eos_ids + [tokenizer.eos_token_id] if i is not None}
        self.keeps_last_logits = _accepts_logits_to_keep(model)

    # Loading -----------------------------------------------------------------

    @classmethod
    def load(cls, spec: ModelSpec) -> TransformersBackend:
        from .transformers_loading import load_model

        return cls(spec, *load_model(spec))

    def attach_adapter(self, path: Path) -> str:
        path = Path(path).resolve()
        if path in self.adapter_names:
            return self.adapter_names[path]
        from peft import PeftModel

        from ..runtime.int8_linear import int8_weights_read_in_a_row

        name = "fslm_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        try:
            with int8_weights_read_in_a_row():
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(str(path), adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise AdapterError(f"adapter {path} does not fit model {self.spec.id!r}: {reason}") from None
        self.model.eval()
        self.adapter_names[path] = name
        log.info("attached adapter", model=self.spec.id, adapter=str(path), name=name)
        return name

    # Prompts -----------------------------------------------------------------

    def render_prompt(self, instruction: str, user_text: str) -> str:
        return render_prompt(self.spec, self.tokenizer, self.uses_chat_template, instruction, user_text)

    def encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, self.uses_chat_template, text)

    # Generation --------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        adapters: Sequence[str | None],
        settings: GenerationSettings,
        batch_size: int,
        on_batch: Callable[[int], None] | None = None,
        on_text: Callable[[int, str], bool] | None = None,
        constraints: Sequence[Constraint | None] | None = None,
    ) -> list[Generation]:
        if len(prompts) != len(adapters):
            raise ValueError("generate: one adapter (or None) per prompt")
        if constraints is not None and len(constraints) != len(prompts):
            raise ValueError("generate: one constraint (or None) per prompt")
        encoded = [self._truncate(self.encode(prompt), settings.max_new_tokens) for prompt in prompts]
        # Longest first, so each batch holds prompts of similar length and pads little.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            on_step = self._text_reporter(batch, settings, on_text) if on_text is not None else None
            generations = self._generate_batch(
                [encoded[i] for i in batch],
                [adapters[i] for i in batch],
                settings,
                on_step,
                None if constraints is None else [constraints[i] for i in batch],
            )
            for index, generation in zip(batch, generations):
                results[index] = generation
            if on_batch is not None:
                on_batch(len(batch))
        return results  # type: ignore[return-value]

    def _truncate(self, ids: list[int], max_new_tokens: int) -> list[int]:
        limit = self.spec.context_length
        if limit and len(ids) + max_new_tokens > limit:
            keep = max(limit - max_new_tokens, 1)
            log.warning("prompt truncated from the left", model=self.spec.id, tokens=len(ids), kept=keep)
            return ids[-keep:]
        return ids

    def _text_reporter(self, batch: list[int], settings: GenerationSettings, on_text: Callable[[int, str], bool]):
        """decode's ``on_step`` for one batch: each row's showable text to ``on_text``, by the caller's index."""
        from ..runtime.decoding import streamable_text

        shown: dict[int, str] = {}

        def on_step(rows: list[int], generated: list[list[int]]) -> list[int]:
            leaving = []
            for row in rows:
                tokens = generated[row][: self._completion_length(generated[row])]
                text = streamable_text(self.tokenizer.decode(tokens, skip_special_tokens=True), settings.stop)
                if text != shown.get(row, "") and not on_text(batch[row], text):
                    leaving.append(row)
                shown[row] = text
            return leaving

        return on_step

    def _generate_batch(
        self,
        encoded: list[list[int]],
        adapters: list[str | None],
        settings: GenerationSettings,
        on_step: Callable[[list[int], list[list[int]]], list[int]] | None = None,
        constraints: Sequence[Constraint | None] | None = None,
    ) -> list[Generation]:
        import torch

        from ..runtime.decoding import READING_PROGRESS_TOKENS, cut_at_stop, decode
        from ..runtime.reading_progress import reading_progress

        started = time.perf_counter()
        options: dict = {}
        logprobs: list[list[float]] = []
        masks = self._format_compiler.masks(constraints) if constraints is not None else None
        prompt_tokens = sum(len(ids) for ids in encoded)
        reading = reading_progress(
            self.model, prompt_tokens, f"{self.spec.id}: reading the prompt", prompt_tokens >= READING_PROGRESS_TOKENS
        )
        with torch.inference_mode(), self._adapters_active(adapters, options), reading as prompt_read:
            new_tokens = decode(
                self.model,
                encoded,
                settings,
                self.eos_ids,
                self.tokenizer.pad_token_id,
                tokenizer=self.tokenizer,
                adapter_names=options.get("adapter_names"),
                logits_to_keep=self.keeps_last_logits,
                on_step=on_step,
                logprobs=logprobs,
                masks=masks,
                on_prefill=prompt_read,
            )
        elapsed = time.perf_counter() - started
        prompt_lengths = [len(ids) for ids in encoded]
        generations = []
        for row, prompt_length, row_logprobs in zip(new_tokens, prompt_lengths, logprobs):
            length = self._completion_length(row)
            text = self.tokenizer.decode(row[:length], skip_special_tokens=True)
            generations.append(
                Generation(
                    text=cut_at_stop(text, settings.stop).strip(),
                    prompt_tokens=int(prompt_length),
                    completion_tokens=length,
                    latency_s=elapsed,
                    batch_size=len(encoded),
                    **logprob_summary(row_logprobs[:length]),
                )
            )
        return generations

    @functools.cached_property
    def _format_compiler(self) -> FormatCompiler:
        from ..runtime.format_masks import FormatCompiler

        return FormatCompiler(self.tokenizer, self.eos_ids)

    def _completion_length(self, row: list[int]) -> int:
        """Tokens generated up to and including the first end-of-sequence token."""
        for position, token in enumerate(row):
            if token in self.eos_ids:
                return position + 1
        return len(row)

    @contextmanager
    def _adapters_active(self, adapters: list[str | None], options: dict) -> Iterator[None]:
        """Make each row of a batch run with its own adapter (or the plain base)."""
        distinct = set(adapters)
        if not self.adapter_names:
            if distinct != {None}:
                raise AdapterError(f"model {self.spec.id!r} has no adapter attached")
            yield
        elif distinct == {None}:
            with self.model.disable_adapter():
                yield
        elif len(distinct) == 1:
            self.model.set_adapter(adapters[0])
            yield
        else:
            options["adapter_names"] = [name or BASE_ADAPTER for name in adapters]
            yield

    # Scoring -------------------------------------------------------------------

    @property
    def max_sequence_length(self) -> int:
        """Tokens the model reads at once: the spec's context length, else the model config's."""
        if self.spec.context_length:
            return self.spec.context_length
        config = self.model.config
        config = getattr(config, "text_config", None) or config
        for attribute in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(config, attribute, None)
            if value is not None:
                return int(value)
        return DEFAULT_MAX_LENGTH

    def score_tokens(
        self,
        rows: Sequence[tuple[list[int], list[int]]],
        adapters: Sequence[str | None],
        batch_size: int,
    ) -> list[tuple[float, bool]]:
        """Sum of log-probabilities of each row's continuation ids after its context ids, and greedy match.

        Rows that share a context and adapter (the choices of one question) run
        the context once and score their continuations on its cached keys and
        values. Other rows run whole, left-padded, longest first; inputs longer
        than the model's context lose tokens from the left.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if any(not continuation for _, continuation in rows):
            raise ValueError("score_tokens: a continuation encodes to no tokens")
        limit = self.max_sequence_length
        shared: dict[tuple, list[int]] = defaultdict(list)
        for index, (context, continuation) in enumerate(rows):
            if len(context) + len(continuation) <= limit + 1:
                shared[(tuple(context), adapters[index])].append(index)
        results: list[tuple[float, bool] | None] = [None] * len(rows)
        for (context, adapter), members in shared.items():
            if len(members) > 1:
                scores = self._score_after_shared_context(
                    list(context), [rows[i][1] for i in members], adapter, batch_size
                )
                for index, score in zip(members, scores):
                    results[index] = score
        rest = [index for index, result in enumerate(results) if result is None]
        for index, score in zip(
            rest, self._score_whole_rows([rows[i] for i in rest], [adapters[i] for i in rest], batch_size)
        ):
            results[index] = score
        return results  # type: ignore[return-value]

    def _score_whole_rows(
        self, rows: Sequence[tuple[list[int], list[int]]], adapters: Sequence[str | None], batch_size: int
    ) -> list[tuple[float, bool]]:
        import torch

        limit = self.max_sequence_length
        inputs = [((context + continuation)[-(limit + 1) :][:-1], continuation) for context, continuation in rows]
        order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i][0]))
        results: list[tuple[float, bool] | None] = [None] * len(inputs)
        keeps_logits = _accepts_logits_to_keep(self.model)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(inputs[i][0]) for i in batch)
            keep = max(len(inputs[i][1]) for i in batch)
            input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):
                ids = inputs[index][0]
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids) :] = 1
            # Left padding shifts positions; give each row its own from its first real token.
            position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
            options: dict = {}
            if keeps_logits:
                options["logits_to_keep"] = keep
            with torch.inference_mode(), self._adapters_active([adapters[i] for i in batch], options):
                logits = self.model(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    position_ids=position_ids.to(self.device),
                    **options,
                ).logits[:, -keep:, :]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, index in enumerate(batch):
                continuation = inputs[index][1]
                results[index] = _continuation_score(logprobs[row, keep - len(continuation) :], continuation)
        return results  # type: ignore[return-value]

    def _score_after_shared_context(
        self, context: list[int], continuations: list[list[int]], adapter: str | None, batch_size: int
    ) -> list[tuple[float, bool]]:
        """Continuations after one context: the context runs once, each batch of them on a copy of its cache."""
        import copy

        import torch

        from ..runtime.decoding import cache_keyword, returned_cache

        results = []
        with torch.inference_mode(), self._adapters_active([adapter], {}):
            options = {"logits_to_keep": 1} if _accepts_logits_to_keep(self.model) else {}
            output = self.model(input_ids=torch.tensor([context], device=self.device), use_cache=True, **options)
            # The context's last position predicts every continuation's first token.
            first = torch.log_softmax(output.logits[0, -1:].float(), dim=-1)
            cache = returned_cache(output)
            for start in range(0, len(continuations), batch_size):
                chunk = continuations[start : start + batch_size]
                width = max(len(continuation) for continuation in chunk) - 1
                rest = None
                if width > 0:
                    chunk_cache = copy.deepcopy(cache)
                    chunk_cache.batch_repeat_interleave(len(chunk))
                    # Right padding: causal attention keeps real tokens from seeing the pads after them.
                    input_ids = torch.full((len(chunk), width), self.tokenizer.pad_token_id, dtype=torch.long)
                    for row, continuation in enumerate(chunk):
                        input_ids[row, : len(continuation) - 1] = torch.tensor(continuation[:-1], dtype=torch.long)
                    rest = self.model(
                        input_ids=input_ids.to(self.device),
                        attention_mask=torch.ones(
                            (len(chunk), len(context) + width), dtype=torch.long, device=self.device
                        ),
                        **{cache_keyword(self.model): chunk_cache},
                    ).logits
                    rest = torch.log_softmax(rest.float(), dim=-1)
                for row, continuation in enumerate(chunk):
                    logprobs = (
                        first if len(continuation) == 1 else torch.cat([first, rest[row, : len(continuation) - 1]])
                    )
                    results.append(_continuation_score(logprobs, continuation))
        return results

    def move_to(self, device: str | torch.device) -> None:
        """Place the model (and every attached adapter) on ``device``."""
        import torch

        device = torch.device(device)
        if device != self.device:
            self.model.to(device)
            self.device = device


DEFAULT_MAX_LENGTH = 2048  # lm-eval's default when neither spec nor config names a context length


def _continuation_score(logprobs: torch.Tensor, continuation: list[int]) -> tuple[float, bool]:
    """Summed log-probability of ``continuation`` under per-position ``logprobs``, and whether each token is argmax."""
    import torch

    targets = torch.tensor(continuation, dtype=torch.long, device=logprobs.device)
    total = logprobs.gather(-1, targets.unsqueeze(-1)).sum()
    return float(total), bool((logprobs.argmax(dim=-1) == targets).all())


def _accepts_logits_to_keep(model) -> bool:
    """Whether the causal LM under any peft wrapper can compute only the last positions' logits."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


@hookimpl(tryfirst=True)
def register_backends(register):
    register(TransformersBackend)


@hookimpl
def resolve_model(model_id):
    if not model_id.startswith(HF_PREFIX):
        return None
    source = model_id[len(HF_PREFIX) :]
    if not source:
        return None
    return ModelSpec(id=model_id, backend=TransformersBackend.name, source=source, description="Hugging Face model")
