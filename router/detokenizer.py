"""Incremental detokenization: the text each new token adds, never a broken character.

The prefix/read-offset technique of TGI and vLLM. Decoding a token alone is
wrong in general: byte-level BPE splits one character over several tokens
(each alone decodes to U+FFFD), and SentencePiece drops a leading space when
a piece is decoded without its predecessor. So each step decodes a short
window twice, the tokens already shown (``prefix_offset:read_offset``) and the
same window plus the new ones, and emits the difference, but only once the
longer decode no longer ends in U+FFFD (the character is complete). Until
then the new tokens stay unread and the next token widens the window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"
# Prompt tokens that seed the window, so the first generated token decodes in
# context (a SentencePiece leading space, a character split across the boundary).
CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    __slots__ = ("_decode", "_ids", "_prefix", "_read")

    def __init__(self, decode: Callable[[Sequence[int]], str], prompt_ids: Sequence[int] = ()) -> None:
        self._decode = decode
        self._ids = list(prompt_ids[-CONTEXT_TOKENS:])
        self._prefix = 0
        self._read = len(self._ids)

    def add(self, token_id: int) -> str:
        """The text ``token_id`` completes ("" while a character is still unfinished)."""
        ids = self._ids
        ids.append(token_id)
        prefix_text = self._decode(ids[self._prefix : self._read])
        full_text = self._decode(ids[self._prefix :])
        if len(full_text) > len(prefix_text) and not full_text.endswith(REPLACEMENT):
            # Keep the window short: the next step starts from the tokens just read.
            del ids[: self._read]
            self._prefix, self._read = 0, len(ids)
            return full_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """What is still unread at the end of a generation, as a full decode shows it (U+FFFD included)."""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        full_text = self._decode(self._ids[self._prefix :])
        self._read = len(self._ids)
        return full_text[len(prefix_text) :]
