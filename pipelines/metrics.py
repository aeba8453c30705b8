"""The one Metric table: every metric a spec may constrain or rank by, and what each means.

Spec validation, selection (direction), noise handling (timed), the report's columns, registry
browsing and docs/metrics.md are all views of METRICS, so adding a metric is one row here (plus the
code in tasks/ that measures it). The table's order is the report's column order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slimline.tasks.base import TASKS

ALL_TASKS = frozenset(TASKS)
_FE = frozenset({"feature-extraction"})
_TC = frozenset({"text-classification"})
_LM = frozenset({"causal-lm"})


@dataclass(frozen=True)
class Metric:
    """One metric of a variant: which tasks report it, which way is better, and how it is shown."""

    name: str
    tasks: frozenset[str]  # the model tasks whose variants report it
    direction: Literal["max", "min"]  # which way is better when it is an objective
    timed: bool  # from interleaved timings: compared by paired ratios within the measured noise
    unit: str  # "" for ratios and scores
    bounds: tuple[float | None, float | None]  # the range it can take (None: open)
    meaning: str  # one line, for the docs
    column: str | None = None  # the report's column header, when the report shows it
    digits: int = 3  # decimals in the report's column
    key: bool = False  # shown beside each model when browsing the registry


def _m(
    name: str,
    tasks: frozenset[str],
    direction: Literal["max", "min"],
    meaning: str,
    *,
    unit: str = "",
    bounds: tuple[float | None, float | None] = (None, None),
    timed: bool = False,
    column: str | None = None,
    digits: int = 3,
    key: bool = False,
) -> Metric:
    return Metric(name, tasks, direction, timed, unit, bounds, meaning, column, digits, key)


_TABLE = (
    _m("fidelity", ALL_TASKS, "max",
       "agreement with the baseline: mean cosine of pooled embeddings, top-1 class or next-token agreement",
       bounds=(0.0, 1.0), column="fidelity", digits=4, key=True),
    _m("neighbour_agreement", _FE, "max",
       "overlap of each eval text's 10 nearest neighbours under the baseline and the variant",
       bounds=(0.0, 1.0), column="nbr@10"),
    _m("similarity_spearman", _FE, "max",
       "Spearman correlation of all pairwise cosine similarities, baseline vs variant",
       bounds=(-1.0, 1.0)),
    _m("flip_rate", _TC, "min", "share of eval texts whose predicted class differs from the baseline's",
       bounds=(0.0, 1.0)),
    _m("top1_agreement", _LM, "max", "share of token positions whose top next token is the baseline's",
       bounds=(0.0, 1.0)),
    _m("kl_divergence", _LM, "min",
       "mean per-token KL(baseline ‖ variant) of the next-token distributions (top-64 tokens + rest)",
       unit="nats", bounds=(0.0, None), column="KL", digits=4),
    _m("accuracy", _TC, "max", "top-1 accuracy against the eval data's labels (labelled data only)",
       bounds=(0.0, 1.0), column="accuracy"),
    _m("accuracy_delta", _TC, "max", "accuracy minus the baseline's", bounds=(-1.0, 1.0), column="Δacc"),
    _m("sts_spearman", _FE, "max",
       "Spearman correlation of rated pairs' cosine similarity with their human rating (rated data only)",
       bounds=(-1.0, 1.0), column="STS ρ"),
    _m("sts_spearman_delta", _FE, "max", "sts_spearman minus the baseline's", bounds=(-2.0, 2.0),
       column="ΔSTS ρ"),
    _m("perplexity", _LM, "min", "exp of the mean next-token negative log-likelihood on the eval texts",
       bounds=(1.0, None), column="ppl", digits=2),
    _m("perplexity_delta", _LM, "min", "perplexity minus the baseline's"),
    _m("generation_agreement", _LM, "max",
       "share of greedily generated tokens (with the KV cache) equal to the baseline's",
       bounds=(0.0, 1.0), column="gen agr"),
    _m("latency_p50_ms", ALL_TASKS, "min", "median latency of one batch at the configured shape",
       unit="ms", bounds=(0.0, None), timed=True, column="p50 ms", digits=2, key=True),
    _m("latency_p95_ms", ALL_TASKS, "min", "95th-percentile latency of one batch at the configured shape",
       unit="ms", bounds=(0.0, None), timed=True, column="p95 ms", digits=2),
    _m("speedup_vs_baseline", ALL_TASKS, "max", "the baseline's median latency over the variant's",
       unit="x", bounds=(0.0, None), timed=True, column="speedup", digits=2, key=True),
    _m("throughput", ALL_TASKS, "max", "items per second at the configured batch size (from p50)",
       unit="items/s", bounds=(0.0, None), timed=True, column="items/s", digits=1),
    # Not `timed`: their medians are compared with the tolerance, since selection pairs samples of
    # the fixed shape only.
    _m("real_latency_p50_ms", ALL_TASKS, "min",
       "evaluate.latency.shape: real: median latency of a batch of eval texts as they come (own padding)",
       unit="ms", bounds=(0.0, None), column="real p50 ms", digits=2),
    _m("real_speedup_vs_baseline", ALL_TASKS, "max",
       "evaluate.latency.shape: real: the baseline's real_latency_p50_ms over the variant's",
       unit="x", bounds=(0.0, None), column="real speedup", digits=2),
    _m("real_throughput", ALL_TASKS, "max",
       "evaluate.latency.shape: real: items per second on batches of eval texts as they come",
       unit="items/s", bounds=(0.0, None)),
    _m("prefill_ms", _LM, "min", "decoding graphs: median forward pass at the configured shape",
       unit="ms", bounds=(0.0, None)),
    _m("decode_tokens_per_s", _LM, "max", "decoding graphs: greedy tokens per second at batch 1, KV cache",
       unit="tokens/s", bounds=(0.0, None), column="tok/s b1", digits=1),
    _m("decode_tokens_per_s_b8", _LM, "max", "decoding graphs: greedy tokens per second at batch 8, KV cache",
       unit="tokens/s", bounds=(0.0, None), column="tok/s b8", digits=1),
    _m("gops", ALL_TASKS, "max",
       "achieved G operations/s of the transformer blocks at the timed shape (a multiply-add is 2)",
       unit="GOP/s", bounds=(0.0, None), column="GOP/s", digits=1),
    _m("peak_fraction", ALL_TASKS, "max",
       "gops over this CPU's peak for the graph's arithmetic (int8 or fp32; see tasks.cpu_probe.peak_gops)",
       bounds=(0.0, None), column="of peak", digits=2),
    _m("size_mb", ALL_TASKS, "min", "size of the ONNX graph and its external weights on disk",
       unit="MB", bounds=(0.0, None), column="size MB", digits=1, key=True),
    _m("params", ALL_TASKS, "min", "parameters of the exported model", bounds=(0.0, None)),
    _m("flops", ALL_TASKS, "min", "floating-point operations of one forward pass at the configured shape",
       unit="FLOPs", bounds=(0.0, None), column="GFLOPs"),
)  # fmt: skip

METRICS: dict[str, Metric] = {m.name: m for m in _TABLE}


def names() -> tuple[str, ...]:
    """Every metric name, in table order."""
    return tuple(METRICS)


def reported_by(task: str | None) -> list[str]:
    """The metrics a model task's variants report, in table order (every metric for None)."""
    return [n for n, m in METRICS.items() if task is None or task in m.tasks]


def maximised() -> frozenset[str]:
    """Metrics where larger is better; every other one is minimised."""
    return frozenset(m.name for m in METRICS.values() if m.direction == "max")


def timed() -> frozenset[str]:
    """Metrics that come from timing: compared by paired ratios when both sides have samples."""
    return frozenset(m.name for m in METRICS.values() if m.timed)


def columns() -> tuple[tuple[str, str, int], ...]:
    """The report's columns, in order: (metric, header, decimals)."""
    return tuple((m.name, m.column, m.digits) for m in METRICS.values() if m.column is not None)


def key_metrics() -> tuple[str, ...]:
    """The metrics shown beside each model when browsing the registry, in table order."""
    return tuple(m.name for m in METRICS.values() if m.key)


def _bound(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def metrics_markdown() -> str:
    """The docs' metrics table (docs/metrics.md), one row per metric in table order."""
    lines = [
        "| metric | better | tasks | unit | range | timed | report column | registry | meaning |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in METRICS.values():
        tasks = "all" if m.tasks == ALL_TASKS else ", ".join(t for t in TASKS if t in m.tasks)
        low, high = m.bounds
        span = f"[{_bound(low) or '-∞'}, {_bound(high) or '∞'}]"
        lines.append(
            f"| `{m.name}` | {'↑' if m.direction == 'max' else '↓'} | {tasks} | {m.unit or '-'} | {span} "
            f"| {'yes' if m.timed else ''} | {m.column or ''} | {'yes' if m.key else ''} | {m.meaning} |"
        )
    return "\n".join(lines) + "\n"
