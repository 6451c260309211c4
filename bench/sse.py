"""Server-sent events, parsed line by line as they arrive (the WHATWG rules the two APIs use).

An event is the ``data:`` lines before a blank line, joined with newlines;
one optional space after the colon is dropped; comment lines (``:``, TGI's
keep-alive) and other fields (``event:``, ``id:``, ``retry:``) are ignored.
Both TGI and OpenAI-compatible servers put one JSON object in each event;
OpenAI streams end with the event ``[DONE]``, TGI streams just end.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from itertools import chain

DONE = "[DONE]"


class SseParser:
    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: bytes | str) -> str | None:
        """One line (with or without its line ending); the event's data when the line ends an event."""
        text = (line.decode("utf-8") if isinstance(line, bytes) else line).rstrip("\r\n")
        if not text:
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data = []
            return data
        if text.startswith(":"):
            return None
        field, _, value = text.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def close(self) -> str | None:
        """The last event, for a stream that ended without its final blank line."""
        return self.feed(b"")


def events(lines: Iterable[bytes | str]) -> Iterator[str]:
    """Each event's data from a stream's lines (``iter_lines()`` of requests or httpx, a body split on newlines)."""
    parser = SseParser()
    ends = (parser.feed(line) for line in chain(lines, [b""]))  # a last blank line ends an unfinished event
    return (data for data in ends if data is not None)


async def aevents(lines: AsyncIterable[bytes | str]) -> AsyncIterator[str]:
    """``events`` for an asynchronous stream of lines (aiohttp's ``response.content``)."""
    parser = SseParser()
    async for line in lines:
        if (data := parser.feed(line)) is not None:
            yield data
    if (data := parser.close()) is not None:
        yield data


def json_events(lines: Iterable[bytes | str]) -> list:
    """Every event of a finished stream as JSON, OpenAI's closing ``[DONE]`` left out."""
    return [json.loads(data) for data in events(lines) if data != DONE]
