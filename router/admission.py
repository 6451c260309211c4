"""Concurrency limits: the only overload the router itself answers.

Two limits, both refused at once with 429 `overloaded` and a `Retry-After`:
`--max-concurrent-requests` for the whole server, as TGI does (TGI's
semaphore, one permit per sequence, so a `best_of` request holds several),
and a per-API-key limit (`--max-concurrent-requests-per-key`, or the key's
own `max_concurrent_requests` in the tier file), so that one tenant flooding
the server cannot take every permit and starve the others' admission. Below
the limits every request goes to the scheduler, which alone decides who waits
and who is relegated.
"""

from __future__ import annotations

from .auth import Caller
from .errors import OVERLOADED, ApiError


class Permit:
    """Permits held by one request; `release` gives them all back (a second call does nothing)."""

    __slots__ = ("_limit", "_count", "_inner")

    def __init__(self, limit: ConcurrencyLimit, count: int, inner: Permit | None = None) -> None:
        self._limit = limit
        self._count = count
        self._inner = inner

    def release(self) -> None:
        self._limit.in_use -= self._count
        self._count = 0
        if self._inner is not None:
            self._inner.release()


class ConcurrencyLimit:
    def __init__(self, limit: int, retry_after_seconds: int = 1, message: str = "Model is overloaded") -> None:
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        self.message = message
        self.in_use = 0

    @property
    def full(self) -> bool:
        return self.in_use >= self.limit

    def acquire(self, count: int = 1, inner: Permit | None = None) -> Permit:
        """``count`` permits (with ``inner`` released along with them), or 429 `overloaded`."""
        if self.in_use + count > self.limit:
            if inner is not None:
                inner.release()
            raise ApiError(429, self.message, OVERLOADED, {"Retry-After": str(self.retry_after_seconds)})
        self.in_use += count
        return Permit(self, count, inner)


class Admission:
    """The server's limit and each API key's limit, taken together or not at all."""

    def __init__(self, limit: int, per_key: int | None = None, retry_after_seconds: int = 1) -> None:
        self.total = ConcurrencyLimit(limit, retry_after_seconds)
        self.per_key = per_key
        self.retry_after_seconds = retry_after_seconds
        self._tenants: dict[str, ConcurrencyLimit] = {}  # bounded: one per configured key

    def acquire(self, caller: Caller, count: int = 1) -> Permit:
        limit = caller.max_concurrent or self.per_key
        if caller.tenant is None or limit is None:
            return self.total.acquire(count)
        tenant = self._tenants.get(caller.tenant)
        if tenant is None:
            message = f"{caller.label} is over its limit of {limit} concurrent requests"
            tenant = self._tenants[caller.tenant] = ConcurrencyLimit(limit, self.retry_after_seconds, message)
        return self.total.acquire(count, tenant.acquire(count))
