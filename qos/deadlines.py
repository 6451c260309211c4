"""When each token of a request is due.

Every request gets a first-token deadline and a pace; token n (n >= 1) is due
at ``anchor + (n - 1) * pace``, where the anchor is the first-token deadline,
or the first token's actual time when it came late (re-anchoring: one late
first token must not make every later token late too).

- Interactive tier: first token due at ``arrival + ttft``, pace ``tbt``.
  An early first token banks slack for the tokens after it, which is what lets
  dynamic chunking run large prefill steps between decodes.
- Batch tier: only the last token has an objective (``arrival + ttlt``). Its
  first token is due early enough to decode the expected output at a
  conservative pace: ``arrival + ttlt - expected_tokens * seconds_per_token``
  (``BATCH_SECONDS_PER_TOKEN``, 0.4 s per token, the one default of
  ``PolicyConfig.batch_seconds_per_token``; 15 tokens when neither the tier
  nor ``max_new_tokens`` says otherwise: the reference implementation's
  values), and the later tokens follow that pace.
"""

from __future__ import annotations

from .tiers import SloTargets

BATCH_SECONDS_PER_TOKEN = 0.4  # the only definition: PolicyConfig.batch_seconds_per_token defaults to it
UNKNOWN_OUTPUT_TOKENS = 15


def first_token_deadline(
    arrival: float,
    targets: SloTargets,
    max_new_tokens: int,
    expected_output_tokens: int | None = None,
    seconds_per_token: float = BATCH_SECONDS_PER_TOKEN,
) -> float:
    if targets.ttft is not None:
        return arrival + targets.ttft
    expected = min(expected_output_tokens or UNKNOWN_OUTPUT_TOKENS, max_new_tokens)
    return arrival + targets.ttlt - expected * seconds_per_token


def token_pace(targets: SloTargets, seconds_per_token: float = BATCH_SECONDS_PER_TOKEN) -> float:
    return targets.tbt if targets.tbt is not None else seconds_per_token


def anchor(first_deadline: float, first_token_time: float) -> float:
    return max(first_deadline, first_token_time)


def token_deadline(anchor_time: float, n: int, pace: float) -> float:
    """Deadline of token ``n`` (1-based) once the first token has anchored the schedule."""
    return anchor_time + (n - 1) * pace
