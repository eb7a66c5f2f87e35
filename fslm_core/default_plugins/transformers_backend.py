"""Built-in backend: any causal LM that Hugging Face transformers loads.

Registers the ``transformers`` backend and resolves ``hf:<local folder or hub
id>`` model ids, so users can stack their own models without a plugin.
Adapters are attached with peft to the one loaded base; a batch whose inputs
use different adapters runs as one peft mixed-adapter batch.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from ..backends import Generation, ModelBackend, ModelSpec
from ..declarations import GenerationSettings
from ..errors import AdapterError, ModelLoadError
from ..hookspecs import hookimpl
from ..logs import get_logger

HF_PREFIX = "hf:"
BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in mixed-adapter batches

log = get_logger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).expanduser().exists()


class TransformersBackend(ModelBackend):
    """A transformers causal LM with any number of peft LoRA adapters on it."""

    name = "transformers"

    def __init__(self, spec: ModelSpec, model, tokenizer, device: torch.device):
        super().__init__(spec)
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.adapter_names: dict[Path, str] = {}
        self.uses_chat_template = bool(spec.chat_template and getattr(tokenizer, "chat_template", None))
        eos = model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in eos_ids + [tokenizer.eos_token_id] if i is not None}

    # Loading -----------------------------------------------------------------

    @classmethod
    def load(cls, spec: ModelSpec) -> TransformersBackend:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = spec.source or ""
        if _looks_like_path(source):
            folder = Path(source).expanduser()
            if not folder.is_dir():
                raise ModelLoadError(f"model {spec.id!r}: folder does not exist: {folder}")
            source = str(folder.resolve())
        options = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
        device = default_device()
        started = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **options)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, spec.dtype), **options)
        except (OSError, ValueError, ImportError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(
                f"model {spec.id!r}: cannot load weights from {source!r} ({reason}). "
                "Without network, point the stage's `model_path` (CLI: --model-path) at a local folder "
                "holding the model's config, tokenizer and weights"
            ) from None
        model.to(device).eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        log.info(
            "loaded base model",
            model=spec.id,
            source=source,
            parameters=sum(p.numel() for p in model.parameters()),
            seconds=round(time.perf_counter() - started, 2),
        )
        return cls(spec, model, tokenizer, device)

    def attach_adapter(self, path: Path) -> str:
        path = Path(path).resolve()
        if path in self.adapter_names:
            return self.adapter_names[path]
        from peft import PeftModel

        name = "fslm_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        try:
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
        if self.uses_chat_template:
            messages = [
                {"role": "system", "content": instruction},
                {"role": "user", "content": user_text},
            ]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.spec.prompt_template.format(instruction=instruction, input=user_text)

    def encode(self, text: str) -> list[int]:
        # A chat template already holds its special tokens; plain prompts get the tokenizer's own.
        return self.tokenizer(text, add_special_tokens=not self.uses_chat_template)["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # Generation --------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        adapters: Sequence[str | None],
        settings: GenerationSettings,
        batch_size: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        if len(prompts) != len(adapters):
            raise ValueError("generate: one adapter (or None) per prompt")
        encoded = [self._truncate(self.encode(prompt), settings.max_new_tokens) for prompt in prompts]
        # Longest first, so each batch holds prompts of similar length and pads little.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            generations = self._generate_batch([encoded[i] for i in batch], [adapters[i] for i in batch], settings)
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

    def _generate_batch(
        self, encoded: list[list[int]], adapters: list[str | None], settings: GenerationSettings
    ) -> list[Generation]:
        started = time.perf_counter()
        inputs = self.tokenizer.pad({"input_ids": encoded}, padding=True, return_tensors="pt").to(self.device)
        options = {
            "max_new_tokens": settings.max_new_tokens,
            "do_sample": not settings.greedy,
            "pad_token_id": self.tokenizer.pad_token_id,
            "repetition_penalty": settings.repetition_penalty,
        }
        if not settings.greedy:
            options.update(temperature=settings.temperature, top_p=settings.top_p)
        if settings.stop:
            options.update(stop_strings=list(settings.stop), tokenizer=self.tokenizer)
        with torch.inference_mode(), self._adapters_active(adapters, options):
            output = self.model.generate(**inputs, **options)
        elapsed = time.perf_counter() - started
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        generations = []
        for row, prompt_length in zip(new_tokens, prompt_lengths):
            length = self._completion_length(row)
            text = self.tokenizer.decode(row[:length], skip_special_tokens=True)
            generations.append(
                Generation(
                    text=cut_at_stop(text, settings.stop).strip(),
                    prompt_tokens=int(prompt_length),
                    completion_tokens=length,
                    latency_s=elapsed,
                    batch_size=len(encoded),
                )
            )
        return generations

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


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cut = len(text)
    for marker in stop:
        position = text.find(marker)
        if position != -1:
            cut = min(cut, position)
    return text[:cut]


@hookimpl
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
