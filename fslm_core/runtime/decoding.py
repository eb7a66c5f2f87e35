"""Batched decoding built for stage calls on a CPU.

A stage call is many prompts that start alike (the stage's instruction and
template) and then differ, each answered by a few dozen tokens. Its two phases
cost differently: reading a prompt (prefill) is bound by arithmetic, so
batching it gains nothing but padding, while writing tokens (decode) is bound
by reading the weights once per step, so the more rows share a step, the
cheaper each token. :func:`decode` therefore

1. runs the token prefix that rows with the same adapter share once, and starts
   each of those rows from its keys and values (prefix caching);
2. prefills the rest of each prompt in chunks of rows of similar length,
   trading the padding of a chunk against the fixed cost of a pass (the
   caller hears the tokens each pass read: a progress line for long prompts);
3. decodes all rows together on a key/value cache sized for the whole call up
   front (transformers' ``DynamicCache`` copies every layer's cache at every
   step to grow it), and drops a row as soon as it ends by moving a live row
   into its place rather than copying the cache.

Every row's tokens sit right-aligned at the same columns of the cache; the
attention mask hides the gaps, and each row's position ids count its own real
tokens, so a row's output does not depend on its neighbours. Token choice
reuses transformers' logits processors and stop-string criterion, so greedy
output matches ``generate``. Models with other than full attention in every
layer (sliding windows, for example) skip steps 1 and 2 and keep
transformers' own cache for their layers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import DynamicCache, LogitsProcessorList
from transformers.cache_utils import Cache, DynamicLayer
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.stopping_criteria import StopStringCriteria

from ..declarations import GenerationSettings
from .kv_cache import ReservedLayer, compaction, select_rows

PREFILL_TOKENS = 2048
"""Most prompt tokens (padding included) read by one prefill forward pass."""

READING_PROGRESS_TOKENS = 2 * PREFILL_TOKENS
"""A batch with this many prompt tokens or more shows its reading as a progress line (it takes seconds)."""

PASS_COST = 32
"""What one more prefill forward pass costs, in prompt tokens.

A pass reads all the weights whatever its length, which on a CPU takes about
as long as computing a few dozen tokens of a small model; prefill chunks
trade that against the padding a chunk of unequal prompts computes."""


class TokenMasks(Protocol):
    """Which tokens each row may write next (``format_masks.FormatMasks`` holds rows to their formats).

    Rows are named by their index in ``decode``'s prompts, whatever place they have in the shrinking batch.
    """

    def apply(self, rows: Sequence[int], scores: torch.Tensor, greedy: bool = False) -> None:
        """Set to -inf, in place, the scores of the tokens row ``rows[i]`` (scores row ``i``) may not write.

        With ``greedy`` (the scores feed only an argmax), only rows whose best token is not allowed need it.
        """

    def advance(self, rows: Sequence[int], tokens: Sequence[int]) -> None:
        """Hear the token each row wrote."""


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


# Key/value cache ---------------------------------------------------------------


def full_attention_only(model) -> bool:
    """Whether every layer of ``model`` keeps its whole key/value history (no sliding or chunked windows)."""
    config = model.config
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)


# Prefill -------------------------------------------------------------------------


@dataclass
class Prefilled:
    """The state decoding starts from: the cache, which columns are real, and each row's next-token logits."""

    cache: Cache
    width: int  # columns filled by the prompts (right-aligned)
    mask: torch.Tensor  # [rows, width + max_new_tokens]; 1 where a column holds a real token
    logits: torch.Tensor  # [rows, vocabulary]


def shared_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every row shares, leaving each row at least one token of its own."""
    first = rows[0]
    length = min(len(row) for row in rows) - 1
    for row in rows[1:]:
        length = next((i for i in range(length) if row[i] != first[i]), length)
    return max(length, 0)


def prefill_chunks(lengths: Mapping[int, int], rows: Sequence[int]) -> list[list[int]]:
    """Split ``rows`` into prefill batches, longest first, at the least cost.

    A batch costs :data:`PASS_COST` plus its rows times its longest row (what
    it computes with the padding); no batch exceeds :data:`PREFILL_TOKENS`
    unless one row alone does. Rows sorted by length split best into runs of
    neighbours, so the cheapest split is a shortest path over the cut points.
    """
    ordered = sorted(rows, key=lambda r: -lengths[r])
    count = len(ordered)
    best = [0.0] + [float("inf")] * count  # best[j]: cost of the first j rows
    cut = [0] * (count + 1)
    for end in range(1, count + 1):
        for start in range(end - 1, -1, -1):
            padded = (end - start) * lengths[ordered[start]]
            if padded > PREFILL_TOKENS and start < end - 1:
                break
            cost = best[start] + PASS_COST + padded
            if cost < best[end]:
                best[end], cut[end] = cost, start
    chunks = []
    end = count
    while end:
        chunks.append(ordered[cut[end] : end])
        end = cut[end]
    return chunks[::-1]


def cache_keyword(model) -> str:
    """The keyword ``model.forward`` takes its key/value cache by: ``cache`` (transformers 5), else ``past_key_values``.

    transformers 5 still accepts the old name but warns at every call that it will go.
    """
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def returned_cache(output) -> Cache:
    """The key/value cache a forward pass returned, under either name."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


class _Forward:
    """Calls the model the same way for every pass: last-position logits only, rows' adapters."""

    def __init__(self, model, logits_to_keep: bool):
        self.model = model
        self.logits_to_keep = logits_to_keep
        self.cache_keyword = cache_keyword(model)

    def __call__(self, input_ids, attention_mask, position_ids, cache, adapter_names=None) -> torch.Tensor:
        extra = {"logits_to_keep": 1} if self.logits_to_keep else {}
        if adapter_names is not None:
            extra["adapter_names"] = adapter_names
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **{self.cache_keyword: cache},
            **extra,
        )
        return output.logits[:, -1, :].float()


def left_padded(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for index, row in enumerate(rows):
        if row:
            ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long, device=device)
            mask[index, width - len(row) :] = 1
    return ids, mask


def prefill_reserved(
    forward: _Forward,
    prompts: Sequence[Sequence[int]],
    names: Sequence[str] | None,
    pad_id: int,
    max_new_tokens: int,
    device,
    on_prefill: Callable[[int], None] | None = None,
) -> Prefilled:
    """Shared prefixes once per adapter, the rest in chunks, assembled into one reserved cache.

    ``on_prefill(tokens)`` hears each chunk's prompt tokens once it is read. A long prompt is read in one
    pass, not in segments of columns: on a CPU a segment after the first attends through an explicit mask,
    which took an 8k-token prompt 35 s instead of 28 s (``benchmarks/long_prompt.py``).
    """
    groups: dict[str | None, list[int]] = defaultdict(list)
    for index in range(len(prompts)):
        groups[names[index] if names is not None else None].append(index)

    rows = len(prompts)
    width = max(len(prompt) for prompt in prompts)  # every chunk ends at this column
    capacity = width + max_new_tokens
    full_mask = torch.zeros((rows, capacity), dtype=torch.long, device=device)
    buffers: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer; shapes come from the first chunk
    logits = torch.empty(0)
    for name, members in groups.items():
        prefix_length = shared_prefix([prompts[i] for i in members]) if len(members) > 1 else 0
        prefix_states = None
        if prefix_length:
            prefix = torch.tensor([prompts[members[0]][:prefix_length]], dtype=torch.long, device=device)
            prefix_cache = DynamicCache()
            forward(prefix, torch.ones_like(prefix), None, prefix_cache, None if name is None else [name])
            prefix_states = [(layer.keys, layer.values) for layer in prefix_cache.layers]
        suffix_lengths = {i: len(prompts[i]) - prefix_length for i in members}
        for chunk in prefill_chunks(suffix_lengths, members):
            ids, suffix_mask = left_padded([prompts[i][prefix_length:] for i in chunk], pad_id, device)
            cache = DynamicCache()
            if prefix_states is not None:
                for layer_index, (keys, values) in enumerate(prefix_states):
                    cache.update(
                        keys.expand(len(chunk), -1, -1, -1), values.expand(len(chunk), -1, -1, -1), layer_index
                    )
            mask = torch.cat([suffix_mask.new_ones((len(chunk), prefix_length)), suffix_mask], dim=1)
            positions = (prefix_length + suffix_mask.cumsum(-1) - 1).clamp(min=0)
            chunk_logits = forward(ids, mask, positions, cache, None if name is None else [name] * len(chunk))
            if on_prefill is not None:
                on_prefill(int(suffix_mask.sum()))
            if not buffers:
                logits = chunk_logits.new_empty((rows, chunk_logits.shape[-1]))
                for layer in cache.layers:
                    keys, values = layer.keys, layer.values
                    buffers.append(
                        (
                            keys.new_zeros((rows, keys.shape[1], capacity, keys.shape[3])),
                            values.new_zeros((rows, values.shape[1], capacity, values.shape[3])),
                        )
                    )
            index = torch.tensor(chunk, device=device)
            start = width - mask.shape[1]
            for (key_buffer, value_buffer), layer in zip(buffers, cache.layers):
                key_buffer[index, :, start:width] = layer.keys
                value_buffer[index, :, start:width] = layer.values
            full_mask[index, start:width] = mask
            logits[index] = chunk_logits
    layers = [ReservedLayer(key_buffer, value_buffer, width) for key_buffer, value_buffer in buffers]
    return Prefilled(Cache(layers=layers), width, full_mask, logits)


def prefill_dynamic(
    forward: _Forward,
    ids: torch.Tensor,
    mask: torch.Tensor,
    names: Sequence[str] | None,
    max_new_tokens: int,
    config,
) -> Prefilled:
    """One pass over the left-padded prompts on transformers' own cache for the model's layer types."""
    cache = DynamicCache(config=config)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = forward(ids, mask, positions, cache, None if names is None else list(names))
    width = ids.shape[1]
    full_mask = torch.cat([mask, mask.new_zeros((ids.shape[0], max_new_tokens))], dim=1)
    return Prefilled(cache, width, full_mask, logits)


# Decoding ------------------------------------------------------------------------


def decode(
    model,
    prompts: Sequence[Sequence[int]],
    settings: GenerationSettings,
    eos_ids: Collection[int],
    pad_id: int,
    tokenizer=None,
    adapter_names: Sequence[str] | None = None,
    logits_to_keep: bool = True,
    on_step: Callable[[list[int], list[list[int]]], Collection[int]] | None = None,
    logprobs: list[list[float]] | None = None,
    masks: TokenMasks | None = None,
    on_prefill: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """Generate for each prompt (token ids, unpadded); return each row's new tokens (ending with EOS if it ended).

    ``adapter_names`` gives each row its peft adapter (a mixed-adapter batch);
    ``tokenizer`` is needed only for stop strings. ``on_step(rows, generated)``
    is called after each step with the rows still decoding and every row's
    tokens so far; the rows it returns stop there (a streaming client left).
    A ``logprobs`` list is filled with each row's token log-probabilities under
    the model's own distribution (routers read how sure a stage was).
    ``masks`` holds rows to their message formats: it removes the tokens a row
    may not write before the processors and the choice, and hears each chosen token.
    ``on_prefill(tokens)`` hears the prompt tokens each prefill pass read (a long prompt is read in
    several).
    """
    if not prompts or any(not prompt for prompt in prompts):
        raise ValueError("decode: every prompt needs at least one token")
    device = next(model.parameters()).device
    forward = _Forward(model, logits_to_keep)
    names = list(adapter_names) if adapter_names is not None else None
    new_tokens = settings.max_new_tokens
    padded_ids, padded_mask = left_padded(prompts, pad_id, device)
    if full_attention_only(model):
        state = prefill_reserved(forward, prompts, names, pad_id, new_tokens, device, on_prefill)
    else:
        config = model.config.get_text_config(decoder=True)
        state = prefill_dynamic(forward, padded_ids, padded_mask, names, new_tokens, config)
        if on_prefill is not None:
            on_prefill(sum(len(prompt) for prompt in prompts))

    rows = len(prompts)
    generated: list[list[int]] = [[] for _ in range(rows)]
    if logprobs is not None:
        logprobs[:] = [[] for _ in range(rows)]
    origin = torch.arange(rows, device=device)  # original row of each row still decoding
    processors = logits_processors(settings)
    stop = StopStringCriteria(tokenizer, list(settings.stop)) if settings.stop else None
    eos = torch.tensor(sorted(eos_ids), device=device)
    # What penalties and stop strings look at: the left-padded prompt, then the tokens written so far.
    history = torch.cat([padded_ids, torch.full((rows, new_tokens), pad_id, device=device)], 1)
    width, mask, cache, logits = state.width, state.mask, state.cache, state.logits
    prompt_width = history.shape[1] - new_tokens
    for step in range(new_tokens):
        # Processors may change the scores in place; the model's own log-probabilities are read from a copy.
        changes_scores = len(processors) or masks is not None
        scores = logits.clone() if logprobs is not None and changes_scores else logits
        live_rows = origin.tolist()
        if masks is not None:
            masks.apply(live_rows, scores, greedy=settings.greedy and not len(processors))
        tokens = choose_tokens(processors(history[:, : prompt_width + step], scores), settings.greedy)
        written = tokens.tolist()
        for row, token in zip(live_rows, written):
            generated[row].append(token)
        if masks is not None:
            masks.advance(live_rows, written)
        if logprobs is not None:
            raw = logits.float()
            chosen = raw.gather(1, tokens[:, None]).squeeze(1) - torch.logsumexp(raw, dim=-1)
            for row, value in zip(origin.tolist(), chosen.tolist()):
                logprobs[row].append(value)
        history[:, prompt_width + step] = tokens
        mask[:, width + step] = 1
        finished = torch.isin(tokens, eos)
        if stop is not None:
            finished |= stop(history[:, : prompt_width + step + 1], logits)
        if on_step is not None:
            leaving = set(on_step(origin.tolist(), generated))
            if leaving:
                finished |= torch.tensor([row in leaving for row in origin.tolist()], device=device)
        if finished.all() or step + 1 == new_tokens:
            break
        if finished.any():
            keep = compaction(finished)
            cache.batch_select_indices(keep)
            history, mask = select_rows(history, keep), select_rows(mask, keep)
            tokens, origin = tokens[keep], origin[keep]
            if names is not None:
                names = [names[i] for i in keep.tolist()]
        positions = mask[:, : width + step + 1].sum(dim=1, keepdim=True) - 1
        logits = forward(tokens[:, None], mask[:, : width + step + 1], positions, cache, names)
    return generated


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cut = len(text)
    for marker in stop:
        position = text.find(marker)
        if position != -1:
            cut = min(cut, position)
    return text[:cut]


def streamable_text(text: str, stop: Sequence[str]) -> str:
    """What of a growing generation can be shown already: a prefix of every longer version's final text.

    Cut at a stop string; held back: a tail that may be the start of a stop
    string, an unfinished multi-byte character, and trailing whitespace (the
    final text is stripped).
    """
    text = cut_at_stop(text, stop).rstrip("\ufffd")
    for marker in stop:
        for length in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:length]):
                text = text[:-length]
                break
    return text.strip()
