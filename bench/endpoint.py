"""Before any load: is the server there, what does it accept, and how does it count tokens?

Every problem found here is a ``BenchError`` with one line that names the
URL and what went wrong (unreachable, no such route, a tier the server does
not know), raised before a single timed request is sent.
"""

from __future__ import annotations

import aiohttp
import orjson

from .client import Record, Target, stream
from .prompt_text import Spans, Tokenize
from .workload import BenchRequest


class BenchError(Exception):
    """Bad input or an unusable server: the CLI prints it as one line and exits 2."""


async def _get_json(session: aiohttp.ClientSession, url: str) -> object | None:
    """GET ``url`` as JSON; None when the route answers anything but 200 JSON."""
    try:
        async with session.get(url) as answer:
            if answer.status != 200:
                return None
            return orjson.loads(await answer.read())
    except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError):
        return None


async def check_reachable(session: aiohttp.ClientSession, base: str) -> None:
    try:
        async with session.get(base + "/health") as answer:
            await answer.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as error:
        raise BenchError(f"cannot reach {base}: {error or type(error).__name__}") from None


async def max_total_tokens(session: aiohttp.ClientSession, base: str) -> int | None:
    """TGI's ``/info`` limit on prompt plus output tokens, when the server has the route."""
    info = await _get_json(session, base + "/info")
    value = info.get("max_total_tokens") if isinstance(info, dict) else None
    return value if isinstance(value, int) and value > 1 else None


async def openai_model(session: aiohttp.ClientSession, base: str) -> str | None:
    """The first model ``/v1/models`` lists (what OpenAI-compatible servers expect in ``model``)."""
    models = await _get_json(session, base + "/v1/models")
    data = models.get("data") if isinstance(models, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0].get("id")
    return None


def server_tokenize(session: aiohttp.ClientSession, base: str, api_key: str | None) -> Tokenize:
    """A ``Tokenize`` calling TGI's ``POST /tokenize`` (offsets into the text, as the server counts it)."""
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"

    async def tokenize(text: str) -> Spans:
        body = orjson.dumps({"inputs": text})
        try:
            async with session.post(base + "/tokenize", data=body, headers=headers) as answer:
                raw = await answer.read()
                if answer.status != 200:
                    raise BenchError(f"{base}/tokenize answered HTTP {answer.status}: {raw[:200]!r}")
                tokens = orjson.loads(raw)
        except (TimeoutError, aiohttp.ClientError) as error:
            raise BenchError(f"{base}/tokenize failed: {error or type(error).__name__}") from None
        except orjson.JSONDecodeError:
            raise BenchError(f"{base}/tokenize did not answer JSON") from None
        if not isinstance(tokens, list) or any(not isinstance(t, dict) or "start" not in t for t in tokens):
            raise BenchError(f"{base}/tokenize does not answer TGI's [{{id, text, start, stop}}]; pass --tokenizer")
        return [(t["start"], t["stop"]) for t in tokens]

    return tokenize


async def preflight(session: aiohttp.ClientSession, target: Target, tier: str) -> None:
    """One short request in ``tier``: a server that refuses it (unknown tier, wrong API) fails fast."""
    record = Record(BenchRequest(-1, tier, 0.0, 1, 1), target.url, 1)
    await stream(session, target, "Hello", record)
    if record.error is not None:
        raise BenchError(f"{target.url}{target.api.path}: a test request in tier {tier!r} failed: {record.error}")
