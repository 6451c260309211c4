"""Structured output in the worker: each constrained request's grammar masks its logits, token by token.

llguidance does the work (docs/structured_output.md). A worker compiles each
distinct `GrammarSpec` once (`GrammarEngine.matcher`: an LRU of fresh
matchers, deep-copied per request), keeps one matcher per constrained
request (on its `Sequence`), and each step fills the bitmask of every
constrained sampling row in one parallel library call. The library releases
the GIL, so `start` hands that call to a thread when the step begins and the
forward pass runs meanwhile; `apply` waits for it and sets every disallowed
logit to -inf before any penalty, warper or softmax sees the row.

A matcher whose grammar is complete (or that failed) allows only EOS, so the
request ends with ``eos_token`` — even with ``ignore_eos``, which cannot make
a finished document longer.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence as Seq
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from niyama.engine.protocol import GrammarSpec, SequenceError

CACHE_SIZE = 256  # distinct grammars kept compiled per worker


class GrammarEngine:
    """One worker's grammar compiler cache, tokenizer view and mask computation."""

    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: frozenset[int], cache_size: int = CACHE_SIZE) -> None:
        import llguidance
        import llguidance.hf

        if not eos_token_ids:
            raise SequenceError("this model has no EOS token, so a grammar could never end its output")
        self.vocab_size = vocab_size
        self.eos = sorted(eos_token_ids)
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=self.eos)
        self.executor = llguidance.LLExecutor()
        self.words = (vocab_size + 31) // 32
        self.cache_size = cache_size
        self.compiled: OrderedDict[GrammarSpec, object] = OrderedDict()
        self.compiles = 0  # grammars compiled (cache misses), for tests and the bench
        # Steps with a constrained row, their rows, and where their masks' time went, for `niyama bench grammar`:
        # filling them on the grammar thread (beside the forward pass), and what `apply` then still waited.
        self.masked_steps = self.masked_rows = 0
        self.fill_seconds = self.wait_seconds = 0.0
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="niyama-grammar")
        eos_only = np.zeros(self.words, dtype=np.uint32)
        for token in self.eos:
            eos_only[token // 32] |= np.uint32(1 << (token % 32))
        self._eos_only = torch.from_numpy(eos_only.view(np.int32))

    def matcher(self, spec: GrammarSpec):
        """A fresh matcher for ``spec``, compiling it on first use; SequenceError for a grammar that cannot be."""
        from llguidance import LLMatcher

        template = self.compiled.get(spec)
        if template is None:
            try:
                template = LLMatcher(self.tokenizer, spec.grammar(), log_level=0)
            except ValueError as error:
                raise SequenceError(f"invalid grammar: {error}") from None
            if template.is_error():
                raise SequenceError(f"invalid grammar: {template.get_error().strip().splitlines()[0]}")
            self.compiles += 1
            self.compiled[spec] = template
            while len(self.compiled) > self.cache_size:
                self.compiled.popitem(last=False)
        else:
            self.compiled.move_to_end(spec)
        return template.deep_copy()

    def start(self, matchers: Seq[object | None]) -> Future[torch.Tensor] | None:
        """Begin the masks of a step's sampling rows (None: an unconstrained row) on the grammar thread."""
        if all(m is None for m in matchers):
            return None
        return self._thread.submit(self._fill, list(matchers))

    def _fill(self, matchers: list[object | None]) -> torch.Tensor:
        began = time.perf_counter()
        masks = torch.full((len(matchers), self.words), -1, dtype=torch.int32)  # -1: every token allowed
        live = [(m, i) for i, m in enumerate(matchers) if m is not None and not m.is_stopped()]
        if live:
            self.executor.unsafe_compute_mask_ptr(live, masks.data_ptr(), self.words * 4, len(matchers))
        for i, m in enumerate(matchers):
            if m is not None and m.is_stopped():
                masks[i] = self._eos_only
        self.masked_steps += 1
        self.masked_rows += sum(m is not None for m in matchers)
        self.fill_seconds += time.perf_counter() - began
        return masks

    def apply(self, pending: Future[torch.Tensor] | None, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (sampling rows x vocab) with each constrained row's disallowed tokens at -inf."""
        if pending is None:
            return logits
        began = time.perf_counter()
        masks = pending.result()
        self.wait_seconds += time.perf_counter() - began
        allowed = _unpack(masks.to(logits.device), logits.shape[-1])
        return logits.masked_fill(~allowed, -torch.inf)


_SHIFTS = torch.arange(32, dtype=torch.int32)


def _unpack(masks: torch.Tensor, vocab: int) -> torch.Tensor:
    """(rows x words) int32 bitmasks as (rows x vocab) booleans: bit j of word w is token 32w + j."""
    bits = (masks.unsqueeze(-1) >> _SHIFTS.to(masks.device)) & 1
    return bits.reshape(masks.shape[0], -1)[:, :vocab].bool()
