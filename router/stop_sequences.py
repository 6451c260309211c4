"""Stop sequences over streamed text, including ones that span several tokens.

Text is released only when no stop sequence can still begin inside it: the
longest tail that is a prefix of some stop sequence is held back until the
next text decides. Holding exactly that tail is enough: a stop sequence that
started earlier would make a longer tail a prefix, so every match is found in
``held + new text``. Released text therefore never contains any part of a
stop sequence that later matches.

What a route shows then differs by protocol: TGI's `generated_text` ends with
the stop sequence itself, OpenAI's content stops just before it (see
`streaming.TokenPipeline`).
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    __slots__ = ("stops", "_held", "_longest")

    def __init__(self, stops: Sequence[str]) -> None:
        # An empty stop sequence would match before any text; it is ignored.
        self.stops = tuple(stop for stop in dict.fromkeys(stops) if stop)
        self._held = ""
        self._longest = max(map(len, self.stops), default=0)

    def feed(self, text: str) -> tuple[str, str | None]:
        """Add ``text``; returns the text now safe to show and the stop sequence that matched (if one did).

        After a match the text up to the start of the earliest match is
        returned and nothing more should be fed.
        """
        if not self.stops:
            return text, None
        buffer = self._held + text
        match_at, matched = len(buffer), None
        for stop in self.stops:
            at = buffer.find(stop)
            if at != -1 and at < match_at:
                match_at, matched = at, stop
        if matched is not None:
            self._held = ""
            return buffer[:match_at], matched
        keep = self._held_tail(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], None

    def flush(self) -> str:
        """The held-back tail, released when the generation ends without a match."""
        held, self._held = self._held, ""
        return held

    def _held_tail(self, buffer: str) -> int:
        for size in range(min(len(buffer), self._longest - 1), 0, -1):
            tail = buffer[-size:]
            if any(stop.startswith(tail) for stop in self.stops):
                return size
        return 0
