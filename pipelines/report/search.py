"""The report's search part: the trials (how far each climbed, why it stopped), the best-so-far
against wall time, and the sensitivity tables of mixed-precision variants."""

from __future__ import annotations

from typing import Any

from slimline.pipelines.report.plots import _figure, _png


def search_lines(manifest: dict[str, Any]) -> list[str]:
    """Markdown lines: a summary of the search and one row per trial."""
    s = manifest.get("search")
    if not s:
        return []
    lines = [
        "",
        f"## Search ({s['strategy']})",
        "",
        f"{s['trials_started']} trials in {s['wall_s']:.0f} s: {s['trials_finished']} reached the last rung, "
        f"{s['trials_stopped']} stopped early, {s['trials_failed']} failed; dimensions: "
        + (", ".join(s["dims"]) or "none"),
        "",
        "| trial | recipe | rungs reached | status | last score | why infeasible |",
        "|---|---|---|---|---|---|",
    ]
    for t in s["trials"]:
        last = t["rungs"][-1] if t["rungs"] else {}
        status = t["status"] + (
            f" at rung {t['stopped_at_rung']}" if t.get("stopped_at_rung") is not None else ""
        )
        score = f"{last['score']:.4g}" if last.get("score") is not None else ""
        label = str(t.get("label") or "").replace("|", "\\|")
        why = str(last.get("why") or "").replace("|", "\\|")
        lines.append(f"| {t['trial']} | {label} | {len(t['rungs'])} | {status} | {score} | {why} |")
    return lines


def sensitivity_lines(manifest: dict[str, Any], top: int = 8) -> list[str]:
    """Markdown lines: for each variant with a sensitivity table, its most sensitive MatMuls."""
    out: list[str] = []
    for v in manifest["variants"]:
        table = v.get("sensitivity")
        if not table:
            continue
        kept = set(v.get("excluded") or [])
        out += [
            "",
            f"## MatMul sensitivity: {v['label']}",
            "",
            "| node | score | kept fp32 |",
            "|---|---|---|",
        ]
        out += [
            f"| {r['node']} | {r['score']:.4g} | {'yes' if r['node'] in kept else ''} |" for r in table[:top]
        ]
    return out


def search_png(manifest: dict[str, Any]) -> bytes | None:
    """Every trial's score at each rung against wall time (stopped trials hollow), and the
    best full-fidelity feasible score so far as a step line."""
    s = manifest.get("search")
    if not s or not s["trials"]:
        return None
    fig, ax = _figure(7.5, 4.2)
    markers = "os^Dv"
    for t in s["trials"]:
        for r in t["rungs"]:
            if r.get("score") is None or not r.get("feasible"):
                continue
            hollow = t["status"] == "stopped"
            ax.scatter(
                r["wall_s"],
                r["score"],
                marker=markers[int(r["rung"]) % len(markers)],
                facecolors="none" if hollow else "tab:blue",
                edgecolors="tab:blue",
                s=28,
            )
    best = s["best_so_far"]
    if best:
        xs = [b["wall_s"] for b in best] + [s["wall_s"]]
        ys = [b["score"] for b in best] + [best[-1]["score"]]
        ax.step(xs, ys, where="post", color="tab:red", label="best so far (last rung, feasible)")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("wall time of the search (s)")
    ax.set_ylabel("score (first objective; feasible trials)")
    ax.set_title(f"{s['strategy']}: markers by rung (o s ^ ...), hollow = stopped early", fontsize=9)
    return _png(fig)
