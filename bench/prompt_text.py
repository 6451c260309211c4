"""Prompt texts that the target server counts as exactly the trace's number of tokens.

A server counts a prompt with its own tokenizer, and a text cut at a token
boundary does not always re-tokenize to the same count. So each prompt is
a window of real text (``prompts.corpus()``: standard-library docstrings),
cut at the offsets the tokenizer reports, then measured again and nudged
until the count is exact (or as close as a few tries get; the measured
count is what the results report).

The tokenizer is the server's own ``POST /tokenize`` (TGI's route: ids with
character offsets; special tokens it adds have empty offsets) or a local
Hugging Face tokenizer, so prompts fit any TGI- or OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from .prompts import corpus

# (start, stop) character offsets of every token the server counts; added special tokens have start == stop.
Spans = list[tuple[int, int]]
Tokenize = Callable[[str], Awaitable[Spans]]
CHARS_PER_TOKEN = 6  # a generous first window; it doubles when short
TRIES = 6


@dataclass(frozen=True, slots=True)
class Prompt:
    text: str
    tokens: int  # as the tokenizer counts it (special tokens it adds included)


def local_tokenize(hf_tokenizer) -> Tokenize:
    """A ``Tokenize`` over a Hugging Face (fast) tokenizer, counting what ``add_special_tokens`` adds."""

    async def tokenize(text: str) -> Spans:
        encoding = hf_tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        return [tuple(span) for span in encoding["offset_mapping"]]

    return tokenize


class PromptBuilder:
    def __init__(self, tokenize: Tokenize, seed: int, text: str | None = None) -> None:
        self.tokenize = tokenize
        self.seed = seed
        self.text = text if text is not None else corpus()
        self._cache: dict[tuple[int, int], Prompt] = {}

    async def build(self, key: int, length: int) -> Prompt:
        """A prompt of ``length`` tokens from a window chosen by ``key`` (the same key and length: the same text)."""
        cached = self._cache.get((key, length))
        if cached is None:
            cached = self._cache[(key, length)] = await self._make(key, length)
        return cached

    async def build_all(self, wanted: Sequence[tuple[int, int]], concurrency: int = 8) -> list[Prompt]:
        """``build`` for every (key, length), a few tokenizer calls in flight at a time."""
        gate = asyncio.Semaphore(concurrency)

        async def one(key: int, length: int) -> Prompt:
            async with gate:
                return await self.build(key, length)

        return list(await asyncio.gather(*(one(key, length) for key, length in wanted)))

    async def _make(self, key: int, length: int) -> Prompt:
        rng = random.Random(f"{self.seed}:prompt:{key}")
        start = rng.randrange(len(self.text))
        while start < len(self.text) and not self.text[start].isspace():
            start += 1  # begin at a word
        start = min(start + 1, len(self.text) - 1)
        source = self.text[start:] + "\n\n" + self.text[:start]
        want = length
        best: Prompt | None = None
        for _ in range(TRIES):
            text = await self._cut(source, max(1, want))
            count = len(await self.tokenize(text))
            if best is None or abs(count - length) < abs(best.tokens - length):
                best = Prompt(text, count)
            if count == length:
                break
            want += length - count
        return best

    async def _cut(self, source: str, tokens: int) -> str:
        """The shortest prefix of ``source`` holding ``tokens`` text tokens (added special tokens not counted)."""
        size = tokens * CHARS_PER_TOKEN + 64
        while True:
            window = source[:size]
            spans = [(a, b) for a, b in await self.tokenize(window) if b > a]
            if len(spans) > tokens or size >= len(source):
                break
            size *= 2
        if len(spans) < tokens:
            raise ValueError(f"a prompt of {tokens} tokens is longer than the prompt corpus ({len(spans)} tokens)")
        return window[: spans[tokens - 1][1]]
