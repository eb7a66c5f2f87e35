"""Batched decoding that retires finished rows.

``transformers``' ``generate`` keeps every row of a batch until the longest one
ends, so a batch of stage messages between 8 and 96 tokens long costs 96 steps
for every row. Stage outputs vary that much, so this loop drops a row (and its
KV cache) as soon as it ends and runs the rest on a smaller batch. Token
choice reuses transformers' own logits processors and stop-string criterion,
so greedy output matches ``generate`` token for token.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from transformers import DynamicCache, LogitsProcessorList
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.stopping_criteria import StopStringCriteria

from .declarations import GenerationSettings


def logits_processors(settings: GenerationSettings) -> LogitsProcessorList:
    processors = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if not settings.greedy:
        processors.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_p < 1.0:
            processors.append(TopPLogitsWarper(settings.top_p))
    return processors


def choose_tokens(scores: torch.Tensor, greedy: bool) -> torch.Tensor:
    if greedy:
        return scores.argmax(dim=-1)
    return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)


def decode(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    settings: GenerationSettings,
    eos_ids: Collection[int],
    tokenizer=None,
    adapter_names: Sequence[str] | None = None,
    logits_to_keep: bool = True,
) -> list[list[int]]:
    """Generate for a left-padded batch; return each row's new tokens (ending with EOS if it ended).

    ``adapter_names`` gives each row its peft adapter (a mixed-adapter batch);
    ``tokenizer`` is needed only for stop strings.
    """
    rows = input_ids.shape[0]
    generated: list[list[int]] = [[] for _ in range(rows)]
    live = torch.arange(rows, device=input_ids.device)  # original row of each row still decoding
    names = list(adapter_names) if adapter_names is not None else None
    processors = logits_processors(settings)
    stop = StopStringCriteria(tokenizer, list(settings.stop)) if settings.stop else None
    eos = torch.tensor(sorted(eos_ids), device=input_ids.device)

    history = input_ids  # prompt plus generated tokens of live rows: what penalties and stops look at
    mask = attention_mask
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    step_ids = input_ids
    cache = DynamicCache()
    for _ in range(settings.max_new_tokens):
        extra = {"logits_to_keep": 1} if logits_to_keep else {}
        if names is not None:
            extra["adapter_names"] = names
        logits = model(
            input_ids=step_ids, attention_mask=mask, position_ids=positions,
            past_key_values=cache, use_cache=True, **extra,
        ).logits[:, -1, :].float()
        tokens = choose_tokens(processors(history, logits), settings.greedy)
        for row, token in zip(live.tolist(), tokens.tolist()):
            generated[row].append(token)
        history = torch.cat([history, tokens[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        finished = torch.isin(tokens, eos)
        if stop is not None:
            finished |= stop(history, logits)
        if finished.all():
            break
        if finished.any():
            keep = (~finished).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            history, mask, tokens, live = history[keep], mask[keep], tokens[keep], live[keep]
            if names is not None:
                names = [names[i] for i in keep.tolist()]
        step_ids = tokens[:, None]
        positions = mask.sum(dim=1, keepdim=True) - 1
    return generated
