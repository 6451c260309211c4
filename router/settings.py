"""What the HTTP layer enforces and reports: TGI's router limits and the served model's identity.

One frozen object built once by `niyama serve` (or a test) and shared by every
route, so `/info` always reports exactly the limits that validation applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROUTER_NAME = "niyama"
ROUTER_VERSION = "0.1.0"


@dataclass(frozen=True)
class ServerSettings:
    model_id: str
    max_input_tokens: int
    max_total_tokens: int
    max_concurrent_requests: int = 128
    max_best_of: int = 2
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_client_batch_size: int = 4  # prompts in one /v1/completions request
    api_key: str | None = field(default=None, repr=False)  # TGI's --api-key: one bearer token for every tier
    model_sha: str | None = None
    model_pipeline_tag: str = "text-generation"
    compute_type: str = "cpu"  # the x-compute-type header
    retry_after_seconds: int = 1  # Retry-After of an `overloaded` answer
    # Hardening limits (docs/security.md): each refused with its own status and the JSON envelope.
    payload_limit: int = 2_000_000  # request body bytes (TGI's --payload-limit); 413 beyond
    max_header_bytes: int = 32_768  # request line and headers; 431 beyond (enforced by `limits.http_protocol`)
    max_concurrent_requests_per_key: int | None = None  # per API key (429); a key's own limit in the tier file wins
    stream_send_timeout: float = 30.0  # seconds a stream may wait on a client that reads nothing; then aborted

    def __post_init__(self) -> None:
        if not 0 < self.max_input_tokens < self.max_total_tokens:
            raise ValueError(
                f"need 0 < max input tokens ({self.max_input_tokens}) < max total tokens ({self.max_total_tokens})"
            )
        if self.max_concurrent_requests < 1 or self.max_best_of < 1:
            raise ValueError("max concurrent requests and max best of must be at least 1")
        if self.max_concurrent_requests_per_key is not None and self.max_concurrent_requests_per_key < 1:
            raise ValueError("max concurrent requests per key must be at least 1")
        if self.payload_limit < 1 or self.max_header_bytes < 1 or not self.stream_send_timeout > 0:
            raise ValueError("the payload limit, header limit and stream send timeout must be positive")

    @property
    def system_fingerprint(self) -> str:
        """What OpenAI answers carry in `system_fingerprint` (TGI: "<version>-<docker label>")."""
        return f"{ROUTER_VERSION}-native"

    def info(self) -> dict:
        """The body of GET /info, field for field as TGI."""
        return {
            "model_id": self.model_id,
            "model_sha": self.model_sha,
            "model_pipeline_tag": self.model_pipeline_tag,
            "max_concurrent_requests": self.max_concurrent_requests,
            "max_best_of": self.max_best_of,
            "max_stop_sequences": self.max_stop_sequences,
            "max_input_tokens": self.max_input_tokens,
            "max_total_tokens": self.max_total_tokens,
            "validation_workers": 1,
            "max_client_batch_size": self.max_client_batch_size,
            "router": ROUTER_NAME,
            "version": ROUTER_VERSION,
            "sha": None,
            "docker_label": None,
        }
