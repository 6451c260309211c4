"""`--max-concurrent-requests`: the only overload the router itself answers.

Beyond the limit a request is refused at once with 429 `overloaded` and a
`Retry-After`, as TGI does (TGI's semaphore, one permit per sequence, so a
`best_of` request holds several). Below it, every request goes to the
scheduler, which alone decides who waits and who is relegated.
"""

from __future__ import annotations

from .errors import OVERLOADED, ApiError


class Permit:
    __slots__ = ("_limit", "_count")

    def __init__(self, limit: ConcurrencyLimit, count: int) -> None:
        self._limit = limit
        self._count = count

    def release(self) -> None:
        """Give the permits back; a second call does nothing."""
        self._limit.in_use -= self._count
        self._count = 0


class ConcurrencyLimit:
    def __init__(self, limit: int, retry_after_seconds: int = 1) -> None:
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        self.in_use = 0

    def acquire(self, count: int = 1) -> Permit:
        if self.in_use + count > self.limit:
            raise ApiError(429, "Model is overloaded", OVERLOADED, {"Retry-After": str(self.retry_after_seconds)})
        self.in_use += count
        return Permit(self, count)
