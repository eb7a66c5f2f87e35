"""Teacher-forced scoring of target tokens, shared by training and the ``target-loss`` scorer.

An example is a rendered prompt and the target a stage must write after it,
encoded as the backend encodes them for generation. The loss counts the target
tokens only; where the model allows, logits are computed only at the positions
that predict a target token (the vocabulary projection of prompt positions is
wasted work).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..api.backends import ModelBackend, TokenizedBackend
from ..errors import AdapterError, InputError

IGNORE_INDEX = -100  # label of tokens that do not count in the loss


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of prompt + target; the loss counts positions from ``target_start`` on."""

    input_ids: tuple[int, ...]
    target_start: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def target_tokens(self) -> int:
        return len(self.input_ids) - self.target_start


def require_tokenized_backend(backend: ModelBackend, stage_name: str) -> TokenizedBackend:
    """``backend`` if training and scoring can use it; an error naming the stage if not."""
    if not isinstance(backend, TokenizedBackend):
        raise InputError(
            f"stage {stage_name!r}: backend {backend.name!r} exposes no transformers model; "
            "fslm trains and scores stages on transformers models"
        )
    return backend


def encode_example(backend: TokenizedBackend, prompt: str, target: str, max_length: int) -> EncodedExample:
    """Tokens the model reads (the rendered prompt) and must write (the target, then end of turn).

    The prompt is encoded exactly as the backend encodes it for generation; the
    target on its own, as the model would generate it after the prompt.
    """
    prompt_ids = list(backend.encode(prompt))
    target_ids = list(backend.tokenizer(target, add_special_tokens=False)["input_ids"])
    eos = backend.tokenizer.eos_token_id
    if eos is not None:
        target_ids.append(eos)
    if len(prompt_ids) + len(target_ids) > max_length:
        # Keep the whole target when it fits in half the window; cut the prompt from the left, as generation does.
        target_ids = target_ids[: max(max_length // 2, max_length - len(prompt_ids))]
        prompt_ids = prompt_ids[-(max_length - len(target_ids)) :]
    return EncodedExample(tuple(prompt_ids + target_ids), len(prompt_ids))


def collate(examples: Sequence[EncodedExample], pad_id: int, device) -> dict:
    """Right-padded tensors: input ids, attention mask and labels (-100 outside the targets)."""
    import torch

    width = max(len(example) for example in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        ids = torch.tensor(example.input_ids, dtype=torch.long)
        input_ids[row, : len(ids)] = ids
        attention[row, : len(ids)] = 1
        labels[row, example.target_start : len(ids)] = ids[example.target_start :]
    return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device), "labels": labels.to(device)}


def slices_logits(model) -> bool:
    """Whether the model's forward takes a boolean ``logits_to_keep`` mask (transformers' slice_logits_to_keep)."""
    from peft import PeftModel

    inner = getattr(model, "module", model)  # DistributedDataParallel
    if isinstance(inner, PeftModel):
        inner = inner.get_base_model()
    return hasattr(sys.modules.get(type(inner).__module__), "slice_logits_to_keep")


def micro_batches(examples: Sequence[EncodedExample], max_tokens: int) -> list[list[EncodedExample]]:
    """``examples`` in consecutive groups whose padded size (rows x longest row) stays within ``max_tokens``.

    A group holds at least one example, however long. Activations grow with
    the padded size of a forward pass, so this bounds a training step's
    memory; the groups' gradients add up to the whole batch's.
    """
    groups: list[list[EncodedExample]] = []
    for example in sorted(examples, key=len, reverse=True):
        if groups and (len(groups[-1]) + 1) * len(groups[-1][0]) <= max_tokens:
            groups[-1].append(example)
        else:
            groups.append([example])
    return groups


def target_loss(model, batch: dict, slice_logits: bool):
    """Summed cross-entropy over target tokens, and their count.

    Logits are computed only where the next token is a target when the model
    supports it: the vocabulary projection of prompt positions is wasted work.

    No attention mask is passed: rows are right-padded, so under causal
    attention a real token never sees a pad (pads only follow it), and every
    real position computes what it would alone. Without a mask, PyTorch's
    attention takes its fused causal kernel; with a padding mask it falls back
    to a path that was several times slower and held far more memory in
    training on a CPU (``docs/performance.md``).
    """
    import torch.nn.functional as F

    labels = batch["labels"]
    keep = labels.new_zeros(labels.shape, dtype=bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX  # position p predicts token p + 1
    targets = labels[:, 1:][keep[:, :-1]]
    options = {"input_ids": batch["input_ids"], "use_cache": False}
    if slice_logits:
        logits = model(**options, logits_to_keep=keep).logits
    else:
        logits = model(**options).logits[keep]
    return F.cross_entropy(logits.float(), targets, reduction="sum"), targets.numel()


@contextmanager
def active_adapter(backend: TokenizedBackend, adapter_name: str | None) -> Iterator[Any]:
    """The backend's model with one attached adapter active, or the plain base for None."""
    from peft import PeftModel

    model = backend.model
    if not isinstance(model, PeftModel):
        if adapter_name is not None:
            raise AdapterError(f"model {backend.spec.id!r} has no adapter {adapter_name!r} attached")
        yield model
    elif adapter_name is None:
        with model.disable_adapter():
            yield model
    else:
        model.set_adapter(adapter_name)
        yield model


def mean_target_loss(
    backend: TokenizedBackend, adapter_name: str | None, examples: Sequence[EncodedExample], batch_size: int
) -> float:
    """Mean loss per target token of ``examples`` under an adapter (teacher forcing, no training)."""
    import torch

    if not examples:
        return float("nan")
    total, count = 0.0, 0
    pad_id = backend.tokenizer.pad_token_id if backend.tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    with active_adapter(backend, adapter_name) as model, torch.inference_mode():
        slice_logits = slices_logits(model)
        for start in range(0, len(order), batch_size):
            batch = collate([examples[i] for i in order[start : start + batch_size]], pad_id, backend.device)
            loss_sum, tokens = target_loss(model, batch, slice_logits)
            total += float(loss_sum)
            count += tokens
    return total / count if count else float("nan")
