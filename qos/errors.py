"""The exceptions qos raises across its boundary, so callers can map them to statuses.

Every one is a ``ValueError``: each says the *input* was wrong (a file, a
request, a trace), never that qos itself failed. The router turns
``AdmissionError`` into HTTP 422 and ``QosConfigError`` into a startup
failure; the simulator turns any of them into exit code 2.
"""

from __future__ import annotations


class QosConfigError(ValueError):
    """A tier file is invalid; the message names the file, the tier and the field."""


class AdmissionError(ValueError):
    """A request cannot be accepted as given (HTTP 422)."""


class UnknownTierError(AdmissionError):
    """The request names a tier the configuration does not have."""


class SloOverrideError(AdmissionError):
    """A request tried to loosen its tier's targets, or to set one its tier lacks."""


class RequestTooLargeError(AdmissionError):
    """The request's prompt plus its new tokens can never fit the KV cache."""


class DuplicateRequestError(AdmissionError):
    """A request id is already known to the scheduler."""


class ProfileError(ValueError):
    """A latency profile JSON is missing, unreadable or malformed."""


class TraceError(ValueError):
    """A workload trace CSV is missing, unreadable or malformed."""
