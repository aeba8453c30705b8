"""The report's plots: what each variant buys in speed for what it costs in quality.

- main: speedup over the fp32 baseline (or the first objective when it is not timed) against
  fidelity, with the latency CI as error bars, the constraints drawn as lines, the baseline
  starred, the selection and the champion marked; points carry their row number in the table
  (labels of a dense sweep would overlap).
- techniques: each technique on its own (pruning without quantization, quantization without
  pruning): the fidelity it gives up and the speedup it buys.
"""

from __future__ import annotations

import io
from typing import Any

from slimline.pipelines.run.noise import TIMED
from slimline.pipelines.run.records import DONE
from slimline.pipelines.spec.spec import Bound

QUALITY = "fidelity"


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(width, height), dpi=110, sharey=ncols > 1)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _y_key(objectives: list[str]) -> str:
    return "speedup_vs_baseline" if objectives[0] in TIMED else objectives[0]


def _speedup_err(m: dict[str, Any], base_ms: float | None) -> tuple[float, float]:
    """The speedup's interval from the variant's 95% CI of the median latency (baseline fixed)."""
    ci, s = m.get("latency_ci_ms"), m.get("speedup_vs_baseline")
    if not ci or not base_ms or s is None or min(ci) <= 0:
        return 0.0, 0.0
    return max(s - base_ms / ci[1], 0.0), max(base_ms / ci[0] - s, 0.0)


def main_png(
    manifest: dict[str, Any], objectives: list[str], constraints: dict[str, Bound], heading: str = ""
) -> bytes:
    """Speedup (or the first objective) against fidelity, every finished variant numbered as in the
    table; `heading` (the report's title and verdict) makes it a picture that stands on its own."""
    y_key = _y_key(objectives)
    selected, base = manifest["selected"], manifest["baseline"].get("variant")
    base_ms = manifest["baseline"].get("latency_p50_ms")
    fig, ax = _figure(8, 5.2)
    for n, v in enumerate(manifest["variants"], 1):
        m = v["metrics"]
        if v["status"] not in DONE or QUALITY not in m or y_key not in m:
            continue
        x, y = m[QUALITY], m[y_key]
        err = _speedup_err(m, base_ms) if y_key == "speedup_vs_baseline" else (0.0, 0.0)
        if v["id"] == base:
            style = {"marker": "*", "ms": 16, "color": "black", "zorder": 5}
        elif v.get("peer"):  # a peer's one-line recipe: what the user would have done by hand
            style = {"marker": "s", "ms": 8, "color": "tab:orange", "mec": "black", "zorder": 4}
        elif v["id"] in selected:
            style = {"marker": "o", "ms": 9, "color": "tab:red", "mec": "black", "zorder": 4}
        else:
            why = str(manifest["rejected"].get(v["id"], ""))
            feasible = why.startswith(("Pareto-dominated", "on the Pareto frontier"))
            style = {"marker": "o", "ms": 6, "color": "tab:blue" if feasible else "lightgrey", "mec": "grey"}
        ax.errorbar([x], [y], yerr=[[err[0]], [err[1]]], ecolor="grey", elinewidth=1, capsize=2, **style)
        tag = f"#{selected.index(v['id']) + 1} ({n})" if v["id"] in selected else str(n)
        ax.annotate(tag, (x, y), fontsize=7, xytext=(4, 3 if n % 2 else -9), textcoords="offset points")
    _champion(ax, manifest, y_key, base_ms)
    _constraint_lines(ax, constraints, y_key)
    ax.plot([], [], "*", color="black", ms=12, label="fp32 baseline")
    ax.plot([], [], "o", color="tab:red", mec="black", label="selected (#rank)")
    if any(v.get("peer") for v in manifest["variants"]):
        ax.plot([], [], "s", color="tab:orange", mec="black", label="peer's one-line recipe")
    ax.plot([], [], "o", color="tab:blue", mec="grey", label="feasible")
    ax.plot([], [], "o", color="lightgrey", mec="grey", label="fails a constraint")
    ax.set_xlabel("fidelity to the fp32 baseline")
    ax.set_ylabel("speedup over the fp32 baseline (95% CI)" if y_key == "speedup_vs_baseline" else y_key)
    ax.set_title(
        f"{manifest['run_id']}: what each variant buys for what it costs (numbers: table rows)", fontsize=8
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if heading:
        fig.suptitle(heading, fontsize=9, fontweight="bold")
    return _png(fig)


def _champion(ax: Any, manifest: dict[str, Any], y_key: str, base_ms: float | None) -> None:
    champ = manifest.get("champion") or {}
    m = champ.get("metrics") or {}
    if QUALITY not in m:
        return
    y = m.get(y_key)
    if y is None and y_key == "speedup_vs_baseline" and base_ms and m.get("latency_p50_ms"):
        y = base_ms / m["latency_p50_ms"]
    if y is not None:
        ax.plot(
            [m[QUALITY]],
            [y],
            "D",
            ms=10,
            mfc="none",
            mec="tab:green",
            mew=2,
            zorder=6,
            label=f"champion v{champ.get('version')} (measured in this run)",
        )


def _constraint_lines(ax: Any, constraints: dict[str, Bound], y_key: str) -> None:
    for name, bound in constraints.items():
        for side in ("min", "max"):
            value = getattr(bound, side)
            if value is None or name not in (QUALITY, y_key):
                continue
            line = ax.axvline if name == QUALITY else ax.axhline
            line(
                value,
                color="tab:red",
                ls="--",
                lw=1,
                label=f"{name} {'≥' if side == 'min' else '≤'} {value:g}",
            )


def technique_png(manifest: dict[str, Any]) -> bytes | None:
    """Each technique alone: fidelity given up and speedup bought (None when no variant is alone)."""
    rows = [
        v
        for v in manifest["variants"]
        if v["status"] in DONE
        and v["id"] != manifest["baseline"].get("variant")
        and (v["pruning"] is None or v["quantization"] is None)
        and QUALITY in v["metrics"]
        and "speedup_vs_baseline" in v["metrics"]
    ]
    if not rows:
        return None
    labels = [v["label"].replace("none × ", "").replace(" × none", "") for v in rows]
    fig, (left, right) = _figure(9, 0.45 * len(rows) + 1.4, ncols=2)
    ys = list(range(len(rows)))
    left.barh(ys, [1 - v["metrics"][QUALITY] for v in rows], color="tab:orange")
    left.set_yticks(ys, labels, fontsize=7)
    left.set_xlabel("fidelity given up (1 − fidelity)")
    left.invert_xaxis()
    right.barh(ys, [v["metrics"]["speedup_vs_baseline"] for v in rows], color="tab:blue")
    right.axvline(1.0, color="black", lw=0.8)
    right.set_xlabel("speedup over fp32")
    fig.suptitle("each technique on its own", fontsize=9)
    return _png(fig)
