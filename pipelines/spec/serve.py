"""The `serve:` block of a spec, which `slimline serve` also builds from its flags.

Serving settings never change what a run computes, so they are left out of the spec's digest.
"""

from __future__ import annotations

from typing import Literal

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
    # 0: a batch is whatever queued while the model was busy (a lone request runs at once); more
    # holds every batch that long for company, even at one client.
    batch_wait_ms: float = Field(default=0.0, ge=0, le=10_000)
    # Hostile traffic gets a 4xx before it costs memory or model time: a body past max_body_bytes
    # is a 413 (refused while it streams in), more than max_texts texts or a text longer than
    # max_text_chars characters is a 422 (checked before the tokenizer sees it).
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)
    max_texts: int = Field(default=256, ge=1)
    max_text_chars: int = Field(default=20_000, ge=1)
    # POST /generate (causal LMs with a decoding graph): the cap on a request's max_new_tokens, and
    # on its prompt (or all its chat messages' contents together), in characters.
    max_new_tokens: int = Field(default=256, ge=1, le=4096)
    max_prompt_chars: int = Field(default=20_000, ge=1)
    # Tokens per text; None: the model's own maximum (a longer text is truncated, never an error).
    max_length: int | None = Field(default=None, ge=2)
    cpus_per_replica: float = Field(default=1.0, gt=0)
    gpus_per_replica: float = Field(default=0.0, ge=0)
    threads: int | None = Field(default=None, ge=1)  # ORT intra-op threads; None: the replica's CPUs
    # ORT threads busy-wait between calls when spinning: faster back-to-back calls, but on a box
    # whose cores the HTTP proxy and the client share, the spinning steals their time.
    spinning: bool = False
    poll_s: float = Field(default=10.0, gt=0)  # --follow: how often the alias is read
    host: str = LOOPBACK
    # "proxy": Serve's own HTTP proxy. "haproxy": Ray's high-throughput ingress (HAProxy in front
    # of each replica's own HTTP server); Ray's template binds HAProxy's stats and metrics ports
    # on every interface, so it is opt-in.
    ingress: Literal["proxy", "haproxy"] = "proxy"
    port: int = Field(default=8000, ge=1, le=65535)

    @model_validator(mode="after")
    def _replicas(self) -> ServeConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas: expected at least min_replicas ({self.min_replicas})")
        return self

    def ingress_env(self) -> dict[str, str]:
        """Environment Serve's processes need for this ingress (Serve 2.60 reads it at start-up).

        "haproxy" is Ray's high-throughput mode: HAProxy in front of each replica's own HTTP
        server (direct ingress), requests to replicas over gRPC, user code on the replica's loop.
        """
        if self.ingress == "haproxy":
            return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
        return {}

    def ort_threads(self, cpus_here: int) -> int:
        """ORT intra-op threads of a replica: `threads`, else the CPUs it reserves (at least one,
        at most what the node has): more would contend with the proxy and the other replicas."""
        if self.threads:
            return self.threads
        return max(1, min(cpus_here, int(self.cpus_per_replica + 0.5)))

    def autoscaling(self) -> dict[str, float | int] | None:
        """Serve's autoscaling_config, or None for a fixed number of replicas."""
        if self.max_replicas == self.min_replicas:
            return None
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }
