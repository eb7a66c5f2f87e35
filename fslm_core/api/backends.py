"""Model backends: what a stage needs from a loaded base model.

A :class:`ModelSpec` says where a model's weights are and how to use them; a
:class:`ModelBackend` is one loaded base model on which any number of stages
run, each with its own LoRA adapter (or none). A :class:`TokenizedBackend` is
one whose base is a causal LM over token ids, which training and
log-likelihood scoring need. The runtime's ``ModelPool`` keeps one loaded
backend per base, so stages naming the same model share it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..declarations import GenerationSettings
from ..messages import SampleVote

_BYTES_PER_PARAM = {"float32": 4, "float16": 2, "bfloat16": 2}


class ModelSpec(BaseModel):
    """How to load one model id. Registered by plugins through ``register_models``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="The id stages use in `Stage.model`.")
    backend: str = Field(default="transformers", description="Name of the registered backend that loads it.")
    source: str | None = Field(
        default=None,
        description="Local folder or hub id of the weights; None when the weights are not installed.",
    )
    gguf_file: str | None = Field(default=None, description="GGUF file name inside `source`, if the weights are GGUF.")
    chat_template: bool = Field(default=True, description="Apply the tokenizer's chat template when it has one.")
    prompt_template: str = Field(
        default="{instruction}\n\n{input}\n\nResponse:",
        description="Prompt layout for models without a chat template.",
    )
    lora_target_modules: tuple[str, ...] | None = Field(
        default=None, description="Module names LoRA adapts; None lets peft choose by architecture."
    )
    dtype: str = Field(default="float32", description="torch dtype the weights are loaded in.")
    quantize: Literal["none", "int8"] = Field(
        default="none",
        description="`int8`: linear layers run with int8 weights (one scale per output channel, smoothed by a "
        "calibration text's activations) and int8 activations quantised per row, on the CPU; about 1.3 to 1.4 "
        "times as fast as float32 on CPUs without native bf16. Adapters attach as to float32 layers. A stack's "
        "`dtype: int8` sets it for every stage's model.",
    )
    context_length: int | None = Field(default=None, description="Maximum tokens of prompt plus output.")
    parameters: int | None = Field(default=None, description="Parameter count, for the memory estimate.")
    description: str = ""
    install_hint: str = Field(default="", description="What to do when the weights are missing.")

    @property
    def memory_estimate_bytes(self) -> int | None:
        """Bytes the weights take in memory at `dtype`, or about one per parameter in int8 (activations not included).

        int8 keeps the embeddings in float32; for small models, whose embeddings are a large share, it is low.
        """
        if self.parameters is None:
            return None
        return self.parameters * (1 if self.quantize == "int8" else _BYTES_PER_PARAM.get(self.dtype, 4))

    def with_source(self, path: Path) -> ModelSpec:
        """This spec with its weights read from a local folder instead."""
        return self.model_copy(update={"source": str(path)})


@dataclass
class Generation:
    """One generated continuation, with the cost of the batch it was generated in."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    batch_size: int
    #: Mean log-probability of the generated tokens under the model (before sampling settings): how sure
    #: the model was. None when the backend does not report it.
    mean_logprob: float | None = None
    #: The lowest token log-probability, and the 10th percentile of them (None as above).
    min_logprob: float | None = None
    p10_logprob: float | None = None
    #: A sampling stage's samples and its vote (the engine sets it; backends leave it None).
    votes: list[SampleVote] | None = None


def logprob_summary(logprobs: Sequence[float]) -> dict[str, float | None]:
    """A generation's confidence signals from its tokens' log-probabilities, as :class:`Generation` fields.

    The 10th percentile is the lower nearest-rank one: for ten tokens or fewer it is the minimum.
    """
    if not logprobs:
        return {"mean_logprob": None, "min_logprob": None, "p10_logprob": None}
    ordered = sorted(min(value, 0.0) for value in logprobs)
    return {
        "mean_logprob": sum(ordered) / len(ordered),
        "min_logprob": ordered[0],
        "p10_logprob": ordered[(len(ordered) - 1) // 10],
    }


class ModelBackend(ABC):
    """A loaded base model; stages run on it with or without a LoRA adapter.

    Subclasses are registered through the ``register_backends`` hook. All
    methods take whole batches: the backend owns batching, padding and
    device placement.
    """

    name: ClassVar[str]
    #: True when :meth:`generate` accepts ``on_text`` and reports each row's text as it grows
    #: (``fslm serve`` streams the final stage with it); other backends report a stage when it is done.
    streams_text: ClassVar[bool] = False
    #: True when :meth:`generate` accepts ``constraints``, one :class:`~fslm_core.api.formats.Constraint`
    #: (or None: free text) per prompt, and holds each row's output to it while decoding; other backends
    #: only ask for a stage's format in its instruction.
    enforces_formats: ClassVar[bool] = False
    #: The adapter a server applies to every row of this backend, as the server names it (a remote stage
    #: names it in its model id), recorded in each message; None where adapters are local folders.
    server_adapter: str | None = None

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    @classmethod
    @abstractmethod
    def load(cls, spec: ModelSpec) -> ModelBackend:
        """Load the base model described by ``spec``; raise ModelLoadError if it cannot."""

    @abstractmethod
    def attach_adapter(self, path: Path) -> str:
        """Attach the PEFT adapter folder at ``path`` (once) and return its name."""

    @abstractmethod
    def render_prompt(self, instruction: str, user_text: str) -> str:
        """Lay out a stage's instruction and input as the model expects (chat template or plain)."""

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[str],
        adapters: Sequence[str | None],
        settings: GenerationSettings,
        batch_size: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Continue each rendered prompt, prompt ``i`` with adapter ``adapters[i]`` (None: plain base).

        Results come back in the order of ``prompts``. ``on_batch(n)`` is called
        after each internal batch of ``n`` prompts (progress bars). A backend
        that sets :attr:`streams_text` also takes ``on_text(i, text)``, called
        with prompt ``i``'s text so far (cut at stop strings, never ending in a
        possible start of one) as it grows; when it returns False, row ``i``
        stops generating and keeps what it has. A backend that sets
        :attr:`enforces_formats` also takes ``constraints``.
        """

    def loglikelihood(
        self,
        pairs: Sequence[tuple[str, str]],
        adapters: Sequence[str | None],
        batch_size: int,
    ) -> list[tuple[float, bool]]:
        """Log-probability of each continuation given its context, and whether it is the greedy one."""
        raise NotImplementedError(f"backend {self.name!r} does not score continuations")

    def loglikelihood_rolling(
        self,
        texts: Sequence[str],
        adapters: Sequence[str | None],
        batch_size: int,
    ) -> list[float]:
        """Log-probability of each whole text (perplexity-style), scored in windows of the model's context."""
        raise NotImplementedError(f"backend {self.name!r} does not score whole texts")

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes."""
        raise NotImplementedError(f"backend {self.name!r} does not count tokens")


class TokenizedBackend(ModelBackend):
    """A backend whose base is a causal LM over a tokenizer's ids: what training and log-likelihood scoring need.

    In the manner of lm-eval's ``TemplateLM``, a subclass supplies the
    token-level parts (:meth:`encode`, :meth:`score_tokens`,
    :attr:`max_sequence_length`) and inherits the text-level requests built on
    them. Training reads and replaces ``model`` (a torch module, wrapped by peft
    once adapters attach) and reads ``tokenizer`` (a transformers tokenizer)
    and ``device``.
    """

    model: Any
    tokenizer: Any
    device: Any

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered prompt, exactly as generation reads it."""

    @property
    @abstractmethod
    def max_sequence_length(self) -> int:
        """Tokens the model reads at once."""

    @abstractmethod
    def score_tokens(
        self,
        rows: Sequence[tuple[list[int], list[int]]],
        adapters: Sequence[str | None],
        batch_size: int,
    ) -> list[tuple[float, bool]]:
        """Sum of log-probabilities of each row's continuation ids after its context ids, and greedy match."""

    @abstractmethod
    def move_to(self, device: Any) -> None:
        """Place the model (and every attached adapter) on ``device``."""

    # Scoring (lm-eval's loglikelihood requests) -------------------------------
    #
    # Tokenisation and windows follow lm-eval's own `hf` model (HFLM), so a
    # stage without adapter scores what HFLM scores: trailing spaces of the
    # context move to the continuation, the pair is encoded whole and split at
    # the context's length, an empty context is the BOS (else EOS) token.

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context stands for (BOS, else EOS)."""
        if self.tokenizer.bos_token_id is not None:
            return self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id

    def encode_for_scoring(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """Token ids of ``text`` to score.

        ``None`` encodes like a generation prompt (:meth:`encode`); ``True`` adds
        the tokenizer's special tokens unless the text already starts with the
        BOS token, as lm-eval's ``hf`` model does for plain-text prompts.
        """
        if add_special_tokens is None:
            return self.encode(text)
        if add_special_tokens and text.startswith(self.tokenizer.decode([self.prefix_token_id])):
            add_special_tokens = False
        return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]

    def encode_pair(
        self, context: str, continuation: str, add_special_tokens: bool | None = None
    ) -> tuple[list[int], list[int]]:
        """Context and continuation token ids, split where the context's own encoding ends."""
        spaces = len(context) - len(context.rstrip())
        if spaces and context.strip():
            continuation = context[-spaces:] + continuation
            context = context[:-spaces]
        if not context.strip():
            tokens = self.encode_for_scoring(continuation, add_special_tokens=False)
            if tokens and tokens[0] == self.prefix_token_id:
                return tokens[:1], tokens[1:]
            return [self.prefix_token_id], tokens
        whole = self.encode_for_scoring(context + continuation, add_special_tokens)
        context_ids = self.encode_for_scoring(context, add_special_tokens)
        return context_ids, whole[len(context_ids) :]

    def loglikelihood(
        self,
        pairs: Sequence[tuple[str, str]],
        adapters: Sequence[str | None],
        batch_size: int,
        *,
        add_special_tokens: bool | None = None,
    ) -> list[tuple[float, bool]]:
        """Log-probability of each continuation after its (rendered) context, and whether greedy decoding writes it.

        Pair ``i`` is scored with adapter ``adapters[i]`` (None: plain base).
        ``add_special_tokens`` as in :meth:`encode_for_scoring`.
        """
        if len(pairs) != len(adapters):
            raise ValueError("loglikelihood: one adapter (or None) per pair")
        rows = [self.encode_pair(context, continuation, add_special_tokens) for context, continuation in pairs]
        return self.score_tokens(rows, adapters, batch_size)

    def loglikelihood_rolling(
        self,
        texts: Sequence[str],
        adapters: Sequence[str | None],
        batch_size: int,
    ) -> list[float]:
        """Log-probability of each whole text after the BOS token, in disjoint windows of the model's context."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window  # lm-eval's own windows

        if len(texts) != len(adapters):
            raise ValueError("loglikelihood_rolling: one adapter (or None) per text")
        rows: list[tuple[list[int], list[int]]] = []
        owners: list[int] = []
        for index, text in enumerate(texts):
            windows = get_rolling_token_windows(
                token_list=self.encode_for_scoring(text, add_special_tokens=True),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_sequence_length,
                context_len=1,
            )
            for window in map(make_disjoint_window, windows):
                rows.append(window)
                owners.append(index)
        totals = [0.0] * len(texts)
        for owner, (logprob, _) in zip(owners, self.score_tokens(rows, [adapters[o] for o in owners], batch_size)):
            totals[owner] += logprob
        return totals

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
