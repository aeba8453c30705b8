"""Reports of one run: report.md, and a self-contained report.html with a Pareto scatter plot."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

# Shown when at least one variant has the metric (the task and the eval data decide which).
COLUMNS = (
    ("fidelity", "fidelity", 4),
    ("neighbour_agreement", "nbr@10", 3),
    ("kl_divergence", "KL", 4),
    ("accuracy", "accuracy", 3),
    ("accuracy_delta", "Δacc", 3),
    ("sts_spearman", "STS ρ", 3),
    ("sts_spearman_delta", "ΔSTS ρ", 3),
    ("perplexity", "ppl", 2),
    ("latency_p50_ms", "p50 ms", 2),
    ("latency_p95_ms", "p95 ms", 2),
    ("speedup_vs_baseline", "speedup", 2),
    ("throughput", "items/s", 1),
    ("size_mb", "size MB", 1),
    ("flops", "GFLOPs", 3),
)


def _cell(metrics: dict[str, Any], key: str, digits: int) -> str:
    value = metrics.get(key)
    if value is None:
        return "-"
    if key == "flops":
        value = value / 1e9
    sign = "+" if key.endswith("_delta") and value > 0 else ""
    return sign + f"{value:.{digits}f}" + ("x" if key == "speedup_vs_baseline" else "")


def table_rows(manifest: dict[str, Any]) -> list[list[str]]:
    """Header plus one row per variant: label, status, metrics and the selection note."""
    selected = manifest["selected"]
    columns = [c for c in COLUMNS if any(c[0] in v["metrics"] for v in manifest["variants"])]
    rows = [["variant", "status", *(c[1] for c in columns), "note"]]
    base = manifest["baseline"].get("variant")
    for v in manifest["variants"]:
        if v["id"] in selected:
            note = f"selected #{selected.index(v['id']) + 1}"
        elif v["id"] == base:
            note = "baseline"
        else:
            note = manifest["rejected"].get(v["id"]) or v.get("reason") or ""
        if v["id"] in manifest.get("ties", {}):
            note += f"; {manifest['ties'][v['id']]}"
        metrics = v["metrics"]
        rows.append([v["label"], v["status"], *(_cell(metrics, k, d) for k, _, d in columns), note])
    return rows


def pareto_png(manifest: dict[str, Any], objectives: list[str]) -> bytes:
    """Scatter of the variants over two objectives (fidelity when there is one), baseline and picks marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key = objectives[0]
    y_key = objectives[1] if len(objectives) > 1 else "fidelity"
    selected = manifest["selected"]
    base = manifest["baseline"].get("variant")
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=110)
    pts = [v for v in manifest["variants"] if x_key in v["metrics"] and y_key in v["metrics"]]
    for v in pts:
        x, y = v["metrics"][x_key], v["metrics"][y_key]
        if v["id"] == base:
            ax.scatter(x, y, marker="*", s=260, c="black", zorder=4, label="fp32 baseline")
        elif v["id"] in selected:
            ax.scatter(x, y, s=90, c="tab:red", edgecolors="black", zorder=3)
            ax.annotate(
                f"#{selected.index(v['id']) + 1} {v['label']}",
                (x, y),
                fontsize=7,
                xytext=(5, 4),
                textcoords="offset points",
            )
        else:
            why = str(manifest["rejected"].get(v["id"], ""))
            feasible = not why or why.startswith(("Pareto-dominated", "on the Pareto frontier"))
            ax.scatter(x, y, s=35, c="tab:blue" if feasible else "lightgrey", edgecolors="grey", zorder=2)
    ax.scatter([], [], s=90, c="tab:red", edgecolors="black", label="selected")
    ax.scatter([], [], s=35, c="tab:blue", edgecolors="grey", label="other variants")
    ax.scatter([], [], s=35, c="lightgrey", edgecolors="grey", label="fails a constraint")
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.set_title(f"{manifest['run_id']}: {x_key} vs {y_key}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def verdict_lines(manifest: dict[str, Any]) -> list[str]:
    """The champion measured in this run, and the gate's decision, in words."""
    lines = []
    champ = manifest.get("champion")
    if champ:
        m = champ.get("metrics") or {}
        measured = ", ".join(f"{k} {m[k]:.4g}" for k in ("fidelity", "latency_p50_ms") if k in m)
        lines.append(
            f"champion: version {champ['version']} ({champ.get('variant')}), measured in this run: "
            + (measured or f"not measured ({champ.get('error')})")
        )
    gate = manifest.get("gate")
    if gate:
        lines.append(f"{gate['alias']}: {'moved' if gate['moved'] else 'stays'}: {gate['reason']}")
    return lines


def markdown(manifest: dict[str, Any]) -> str:
    """The run as Markdown: summary, environment and the variant table."""
    rows = table_rows(manifest)
    env = manifest["environment"]
    lines = [
        f"# {manifest['run_id']}",
        "",
        f"- status: **{manifest['status']}**",
        f"- spec hash: `{manifest['spec_hash']}`",
        f"- started {manifest['started']}, finished {manifest['finished']}",
        f"- executor: {env.get('executor', {}).get('kind')}, CPU flags: {env.get('cpu_flags') or '-'}, "
        f"providers: {', '.join(env.get('providers', []))}",
        f"- selected: {', '.join(manifest['selected']) or 'none'}",
        *(f"- {line}" for line in verdict_lines(manifest)),
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def html_report(manifest: dict[str, Any], png: bytes) -> str:
    """A single self-contained HTML page: the table and the plot embedded as a data URI."""
    rows = table_rows(manifest)
    selected = set(manifest["selected"])
    ids = [v["id"] for v in manifest["variants"]]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        f"<tr class='{'sel' if vid in selected else ''}'>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in r)
        + "</tr>"
        for vid, r in zip(ids, rows[1:], strict=True)
    )
    img = base64.b64encode(png).decode()
    title = html.escape(manifest["run_id"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 7px;text-align:left}}tr.sel{{background:#fde2e2}}</style></head>
<body><h1>{title}</h1>
<p>status <b>{html.escape(manifest["status"])}</b>;
spec hash <code>{html.escape(manifest["spec_hash"])}</code>;
selected: {html.escape(", ".join(manifest["selected"]) or "none")}</p>
{"".join(f"<p>{html.escape(line)}</p>" for line in verdict_lines(manifest))}
<img alt="Pareto plot" src="data:image/png;base64,{img}">
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</body></html>
"""


def write_reports(manifest: dict[str, Any], run_dir: Path, objectives: list[str]) -> tuple[Path, Path]:
    """Write report.md and report.html into `run_dir`; returns their paths."""
    run_dir.mkdir(parents=True, exist_ok=True)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text(markdown(manifest))
    html_path.write_text(html_report(manifest, pareto_png(manifest, objectives)))
    return md_path, html_path
