"""The `serve:` block of a spec, which `slimline serve` also builds from its flags.

Serving settings never change what a run computes, so they are left out of the spec's digest.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from slimline.pipelines.spec.base import StrictModel

LOOPBACK = "127.0.0.1"


class ServeConfig(StrictModel):
    """Replicas, autoscaling, request batching and where the HTTP API listens."""

    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=1, ge=1)
    # Serve's autoscaler adds a replica when requests in flight per replica exceed this.
    target_ongoing_requests: float = Field(default=4.0, gt=0)
    max_batch_size: int = Field(default=16, ge=1, le=1024)  # texts per ONNX Runtime call
    batch_wait_ms: float = Field(default=5.0, ge=0, le=10_000)  # how long a batch waits to fill
    # Hostile traffic gets a 4xx before it costs memory or model time: a body past max_body_bytes
    # is a 413 (refused while it streams in), more than max_texts texts or a text longer than
    # max_text_chars characters is a 422 (checked before the tokenizer sees it).
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)
    max_texts: int = Field(default=256, ge=1)
    max_text_chars: int = Field(default=20_000, ge=1)
    # Tokens per text; None: the model's own maximum (a longer text is truncated, never an error).
    max_length: int | None = Field(default=None, ge=2)
    cpus_per_replica: float = Field(default=1.0, gt=0)
    gpus_per_replica: float = Field(default=0.0, ge=0)
    threads: int | None = Field(default=None, ge=1)  # ORT intra-op threads; None: every CPU here
    # ORT threads busy-wait between calls when spinning: faster back-to-back calls, but on a box
    # whose cores the HTTP proxy and the client share, the spinning steals their time.
    spinning: bool = False
    poll_s: float = Field(default=10.0, gt=0)  # --follow: how often the alias is read
    host: str = LOOPBACK
    port: int = Field(default=8000, ge=1, le=65535)

    @model_validator(mode="after")
    def _replicas(self) -> ServeConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas: expected at least min_replicas ({self.min_replicas})")
        return self

    def autoscaling(self) -> dict[str, float | int] | None:
        """Serve's autoscaling_config, or None for a fixed number of replicas."""
        if self.max_replicas == self.min_replicas:
            return None
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }
