"""Request size limits, enforced before more than the limit is held in memory.

- Body (`--payload-limit`, default 2 MB as TGI's): `PayloadLimit` refuses a
  declared `Content-Length` over the limit before reading anything, and
  counts a chunked body as it arrives, so the answer is 413
  `payload_too_large` after at most the limit (plus one read) is buffered.
- Request line and headers (`--max-header-bytes`): uvicorn's httptools
  protocol buffers headers without any bound, so `http_protocol` gives a
  subclass that answers 431 `headers_too_large` and closes the connection
  when a complete head is over the limit, or as soon as the bytes received
  while a head is still incomplete are (so a never-ending head is bounded too).

Both answers carry the JSON envelope and `connection: close`: the rest of an
oversized request is never read.
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import ApiError
from .settings import ServerSettings

PAYLOAD_TOO_LARGE = "payload_too_large"
HEADERS_TOO_LARGE = "headers_too_large"
CLOSE = {"connection": "close"}


def payload_too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than the limit of {limit} bytes", PAYLOAD_TOO_LARGE, CLOSE)


class PayloadLimit:
    """ASGI middleware: no request body over ``limit`` bytes is read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await payload_too_large(self.limit).response()(scope, receive, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise payload_too_large(self.limit)  # answered by the app's error handlers
            return message

        await self.app(scope, bounded, send)


class BoundedHeadersProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; a request whose head exceeds `max_header_bytes` gets 431 and is closed."""

    max_header_bytes = ServerSettings.max_header_bytes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._received_in_head = 0  # bytes received since the current head began, body bytes of the same read too
        self._in_head = True
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._received_in_head += len(data)
        super().data_received(data)
        if self._in_head and self._received_in_head > self.max_header_bytes:
            self._refuse()  # still no complete head: at most one read beyond the limit was buffered

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._refused or len(self.url) + sum(len(n) + len(v) for n, v in self.headers) > self.max_header_bytes:
            self._refuse()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._in_head = True
        self._received_in_head = 0

    def _refuse(self) -> None:
        if self._refused:
            return
        self._refused = True
        body = orjson.dumps({
            "error": f"the request line and headers are larger than the limit of {self.max_header_bytes} bytes",
            "error_type": HEADERS_TOO_LARGE,
        })  # fmt: skip
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


def http_protocol(max_header_bytes: int) -> type[BoundedHeadersProtocol]:
    """The protocol class to give uvicorn (`uvicorn.Config(http=...)`) for this header limit."""
    return type("BoundedHeadersProtocol", (BoundedHeadersProtocol,), {"max_header_bytes": max_header_bytes})


def server_options(settings: ServerSettings) -> dict[str, object]:
    """uvicorn options that enforce ``settings``' transport-level limits (serve and the test harness)."""
    return {"http": http_protocol(settings.max_header_bytes)}
