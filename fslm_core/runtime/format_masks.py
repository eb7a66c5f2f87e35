"""Formats enforced while decoding: each row's layout as a mask over the vocabulary at every step.

A stage's :class:`~fslm_core.api.formats.Constraint` (a regular expression or
a JSON schema) is compiled by llguidance against the backend's tokenizer; one
matcher per row follows what that row has written and says which tokens may
come next. :class:`FormatMasks` is what :func:`~.decoding.decode` applies to a
step's scores: rows of one batch may hold different constraints, or none
(free text), and each keeps its own matcher as rows are retired.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import llguidance
import llguidance.hf
import torch

from ..api.formats import Constraint
from ..logs import get_logger
from .constraints import grammar_of

log = get_logger(__name__)


class FormatCompiler:
    """Grammars for one tokenizer, each compiled once; the tokenizer's llguidance form is built on first use (~1 s)."""

    def __init__(self, hf_tokenizer, eos_ids: Collection[int]):
        self.hf_tokenizer = hf_tokenizer
        self.eos_ids = sorted(eos_ids)
        self._tokenizer = None
        self._grammars: dict[Constraint, str] = {}

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = llguidance.hf.from_tokenizer(self.hf_tokenizer, eos_token=self.eos_ids)
        return self._tokenizer

    def matcher(self, constraint: Constraint) -> llguidance.LLMatcher:
        grammar = self._grammars.get(constraint)
        if grammar is None:
            grammar = self._grammars[constraint] = grammar_of(constraint)
        return llguidance.LLMatcher(self.tokenizer, grammar)

    def masks(self, constraints: Sequence[Constraint | None]) -> FormatMasks | None:
        """The masks for one batch, one constraint (or None: free) per row; None when no row is held."""
        if all(constraint is None for constraint in constraints):
            return None
        return FormatMasks([None if c is None else self.matcher(c) for c in constraints])


class FormatMasks:
    """Per-row matchers of one decode call, by original row; rows without one decode freely."""

    def __init__(self, matchers: Sequence[llguidance.LLMatcher | None]):
        self.matchers = list(matchers)
        self.bit_shifts = torch.arange(8, dtype=torch.uint8)

    def apply(self, rows: Sequence[int], scores: torch.Tensor, greedy: bool = False) -> None:
        """Set to -inf, in place, the scores of tokens each held row may not write next (``rows``: original rows).

        ``greedy``: the scores only feed an argmax, so a row whose best token is allowed is left as it is
        (the same choice, without masking the whole vocabulary: most steps of a model that follows its
        format cost only a bit test).
        """
        held = [(position, self.matchers[row]) for position, row in enumerate(rows) if self.matchers[row] is not None]
        if not held:
            return
        # llguidance.torch would fill a shared bitmask in place, but importing it starts torch.compile (~10 s).
        words = torch.stack(
            [torch.frombuffer(bytearray(matcher.compute_bitmask()), dtype=torch.int32) for _, matcher in held]
        )
        positions = torch.tensor([position for position, _ in held], dtype=torch.long, device=scores.device)
        if greedy:
            best = scores[positions].argmax(dim=-1).cpu()
            inside = best < words.shape[1] * 32
            word = words.gather(1, (best.clamp(max=words.shape[1] * 32 - 1) // 32)[:, None]).squeeze(1)
            free = inside & ((word >> (best % 32).to(torch.int32)) & 1).bool()
            if free.all():
                return
            words, positions = words[~free], positions[~free.to(positions.device)]
        count = words.shape[0]
        # llguidance's bitmask is little-endian 32-bit words, so token t is bit t % 8 of byte t // 8: unpacking
        # bytes in uint8 moves a quarter of the data that shifting int32 words 32 times does.
        allowed = (words.view(torch.uint8)[:, :, None] >> self.bit_shifts).bitwise_and_(1).view(torch.bool)
        allowed = allowed.reshape(count, -1)
        vocabulary = scores.shape[-1]
        if allowed.shape[1] < vocabulary:  # logits beyond the tokenizer's vocabulary are never allowed
            allowed = torch.cat([allowed, allowed.new_zeros((count, vocabulary - allowed.shape[1]))], dim=1)
        blocked = ~allowed[:, :vocabulary].to(scores.device)
        if count == scores.shape[0]:
            scores.masked_fill_(blocked, float("-inf"))
        else:
            scores[positions] = scores[positions].masked_fill(blocked, float("-inf"))

    def advance(self, rows: Sequence[int], tokens: Sequence[int]) -> None:
        """Move each held row's matcher past the token it wrote."""
        for row, token in zip(rows, tokens):
            matcher = self.matchers[row]
            if matcher is None or matcher.is_stopped():
                continue
            if not matcher.consume_token(token):
                # Cannot happen for a token the mask allowed; if it does, the row goes on free rather than fail.
                log.warning(
                    "format matcher refused a token; the row continues unconstrained", error=matcher.get_error()
                )
                self.matchers[row] = None
