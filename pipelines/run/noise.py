"""Latency compared within the measured noise: paired ratios of interleaved timings.

Graphs are timed side by side in rounds (tasks.evaluate.interleaved_times), so the i-th
samples of two graphs were taken close together, under the same machine weather. The ratio of
those pairs, resampled, says whether one graph is really faster than the other or whether the
difference is noise: on shared machines a median moves 30-50% between runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimline.pipelines.metrics import timed

# Metrics that come from timing: compared by paired ratios when both sides have samples.
TIMED = timed()
# Fewer pairs than this cannot tell two graphs apart: the bootstrap CI of a median of a handful
# of noisy ratios is far too optimistic, and a rerun would flip verdicts. They count as tied.
MIN_PAIRS = 20


@dataclass(frozen=True)
class Ratio:
    """Median paired latency ratio a/b, its bootstrap 95% CI, and what that makes of a vs b."""

    median: float
    low: float
    high: float
    verdict: int  # -1: a is faster, +1: a is slower, 0: tied within the noise

    def __str__(self) -> str:
        return f"ratio {self.median:.2f}, CI [{self.low:.2f}, {self.high:.2f}]"


def paired_ratio(a_ms: list[float], b_ms: list[float], tolerance: float, seed: int = 0) -> Ratio:
    """Compare two graphs timed together. `a` is faster only when the whole 95% CI of the ratio lies
    below 1 and its median below 1 - tolerance (slower: the mirror image), from at least
    MIN_PAIRS pairs; anything else is a tie.
    """
    n = min(len(a_ms), len(b_ms))
    if n == 0:
        raise ValueError("no paired samples to compare")
    r = np.asarray(a_ms[:n], np.float64) / np.asarray(b_ms[:n], np.float64)
    rng = np.random.default_rng(seed)  # a fixed seed: the same samples always give the same verdict
    medians = np.median(rng.choice(r, size=(1000, n), replace=True), axis=1)
    med, low, high = (
        float(np.median(r)),
        float(np.percentile(medians, 2.5)),
        float(np.percentile(medians, 97.5)),
    )
    verdict = 0
    if n >= MIN_PAIRS and high < 1 and med < 1 - tolerance:
        verdict = -1
    elif n >= MIN_PAIRS and low > 1 and med > 1 + tolerance:
        verdict = 1
    return Ratio(med, low, high, verdict)
