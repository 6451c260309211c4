"""Which tiers each API key may use, looked up without ever holding the key itself.

Keys are secrets: only their SHA-256 digests are kept, so no repr, log line
or error message can leak one. Entries carry a label (their ``name`` in the
file, or ``api_keys[N]``) for messages instead.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKeyPolicy:
    label: str
    tiers: tuple[str, ...]
    default_tier: str
    max_concurrent_requests: int | None = None  # this key's own limit; None: the server's per-key default


class ApiKeys:
    """Digest -> policy. Empty when the file configures no keys (the server is then open)."""

    def __init__(self, policies: Mapping[str, ApiKeyPolicy] | None = None) -> None:
        self._by_digest = dict(policies or {})

    def lookup(self, key: str | None) -> ApiKeyPolicy | None:
        """The policy of ``key``, or None if it is unknown (or no key was given).

        Every known digest is compared, in constant time, whichever matches: the time taken says
        nothing about the key, nor about which entry it is.
        """
        if key is None:
            return None
        digest = key_digest(key)
        found = None
        for known, policy in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                found = policy
        return found

    def __len__(self) -> int:
        return len(self._by_digest)

    def __repr__(self) -> str:
        labels = ", ".join(policy.label for policy in self._by_digest.values())
        return f"ApiKeys({labels})"
