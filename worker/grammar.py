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
import torch.nn.functional as F

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
        # Steps with a constrained row, and where their masks' time went, for `niyama bench grammar`:
        # filling them on the grammar thread (beside the forward pass), what `apply` then still waited for the
        # thread, and all `apply` took (that wait included): the part on the step's critical path.
        self.masked_steps = 0
        self.fill_seconds = self.wait_seconds = self.apply_seconds = 0.0
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
        self.fill_seconds += time.perf_counter() - began
        return masks

    def apply(self, pending: Future[torch.Tensor] | None, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (sampling rows x vocab) with each constrained row's disallowed tokens at -inf."""
        if pending is None:
            return logits
        began = time.perf_counter()
        masks = pending.result()
        waited = time.perf_counter()
        masked = logits + _bias(masks.to(logits.device), logits.shape[-1], logits.dtype)
        self.wait_seconds += waited - began
        self.apply_seconds += time.perf_counter() - began
        return masked


# Row b: the additive bias of a mask byte b's eight tokens, 0 where its bit is set, else -inf.
_BYTE_BIAS = torch.tensor([[0.0 if b >> j & 1 else -torch.inf for j in range(8)] for b in range(256)])


def _bias(masks: torch.Tensor, vocab: int, dtype: torch.dtype) -> torch.Tensor:
    """(rows x words) int32 bitmasks as an additive (rows x vocab) bias: bit j of word w is token 32w + j.

    One table lookup per mask byte (little-endian, so byte k of word w holds
    tokens 32w + 8k ... 32w + 8k + 7) and an addition: on a CPU an order of
    magnitude faster than unpacking bits with shifts into a `masked_fill`
    (about 1 against 13 ms for 32 rows of a 49k vocabulary), and exact: a
    logit plus 0 is itself.
    """
    table = _BYTE_BIAS.to(masks.device, dtype)
    return F.embedding(masks.view(torch.uint8).long(), table).reshape(masks.shape[0], -1)[:, :vocab]
