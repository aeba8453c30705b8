"""Reports of one run: report.md, and a self-contained report.html with a Pareto scatter plot."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from slimline.pipelines.metrics import columns
from slimline.pipelines.report.search import search_lines, sensitivity_lines
from slimline.pipelines.run.peers import outcome_line
from slimline.pipelines.spec.spec import SelectSpec
from slimline.tasks.base import write_text

# Shown when at least one variant has the metric (the task and the eval data decide which).
COLUMNS = columns()


def _cell(metrics: dict[str, Any], key: str, digits: int) -> str:
    value = metrics.get(key)
    if value is None:
        return "-"
    if key == "flops":
        value = value / 1e9
    sign = "+" if key.endswith("_delta") and value > 0 else ""
    return sign + f"{value:.{digits}f}" + ("x" if key.endswith("speedup_vs_baseline") else "")


def table_rows(manifest: dict[str, Any]) -> list[list[str]]:
    """Header plus one row per variant: label, status, metrics and the selection note."""
    selected = manifest["selected"]
    columns = [c for c in COLUMNS if any(c[0] in v["metrics"] for v in manifest["variants"])]
    rows = [["#", "id", "variant", "version", "status", *(c[1] for c in columns), "note"]]
    base = manifest["baseline"].get("variant")
    # The registry version each registered variant became (notes name ids: the column finds them).
    versions = {r.get("variant"): str(r["version"]) for r in manifest.get("registered") or []}
    for n, v in enumerate(manifest["variants"], 1):  # n: the point's number in the plot
        if v["id"] in selected:
            note = f"selected #{selected.index(v['id']) + 1}"
        elif v["id"] == base:
            note = "baseline"
        elif v.get("peer"):
            note = f"peer: {v['peer']}'s one-line recipe (never selected)" + (
                f"; {v['reason']}" if v.get("reason") else ""
            )
        else:
            note = manifest["rejected"].get(v["id"]) or v.get("reason") or ""
        if v["id"] in manifest.get("ties", {}):
            note += f"; {manifest['ties'][v['id']]}"
        metrics = v["metrics"]
        cells = (_cell(metrics, k, d) for k, _, d in columns)
        version = versions.get(v["id"], "-")
        rows.append([str(n), v["id"], v["label"], version, v["status"], *cells, note])
    return rows


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
    decision = decision_line(manifest)
    deployed = deployed_line(manifest)
    return lines + [x for x in (decision, deployed) if x]


def _version_named(manifest: dict[str, Any], version: str | None) -> str:
    """`version 3 (its label)`: a version registered by this run is named by what it is."""
    rows = {v["id"]: v for v in manifest["variants"]}
    reg = {str(r["version"]): r for r in manifest.get("registered") or []}
    label = rows.get(reg[str(version)].get("variant"), {}).get("label") if str(version) in reg else None
    return f"version {version}" + (f" ({label})" if label else "")


def decision_line(manifest: dict[str, Any]) -> str | None:
    """The champion gate's decision in words: which version holds the alias now, and why."""
    gate = manifest.get("gate")
    if not gate:
        return None
    alias, reason = gate["alias"], gate["reason"]
    if gate["moved"]:
        was = f"replaces version {gate['previous']}" if gate.get("previous") else f"is the first {alias}"
        return f"{alias}: {_version_named(manifest, gate.get('candidate'))} {was} ({reason})"
    if gate.get("previous"):
        return f"{alias}: version {gate['previous']} stays: {reason}"
    return f"{alias}: not moved: {reason}"


def title(manifest: dict[str, Any]) -> str:
    """The report's title: the spec's name and the run's outcome in words."""
    name = str(manifest["run_id"]).rsplit("-", 2)[0]
    gate = manifest.get("gate") or {}
    rows = {v["id"]: v for v in manifest["variants"]}
    if gate.get("moved"):
        outcome = f"{_version_named(manifest, gate.get('candidate'))} is the new {gate['alias']}"
    elif manifest["selected"]:
        outcome = f"picked {rows[manifest['selected'][0]]['label']}"
    else:
        outcome = "nothing selected" if manifest["status"] != "failed" else "failed"
    return f"{name}: {outcome}"


def deployed_line(manifest: dict[str, Any]) -> str | None:
    """evaluate.serving in words: the pick and the baseline served side by side, beside the graph's
    own speed-up, so the report says how much of the win reaches the endpoint."""
    dep = manifest.get("deployed")
    if not dep:
        return None
    load = dep.get("load") or {}
    how = (
        f"deployed (Ray Serve {load.get('ingress', 'proxy')}, {load.get('clients')} clients, "
        f"{load.get('texts_per_request')} text(s)/request)"
    )
    if dep.get("error"):
        return f"{how}: not measured: {dep['error']}"
    rows = {v["id"]: v for v in manifest["variants"]}
    pick, base = rows[dep["variant"]], rows[dep["baseline"]]

    def one(row: dict[str, Any]) -> str:
        s = row.get("served") or {}
        errors = f", {int(s['errors'])} errors" if s.get("errors") else ""
        rps, p50, p99 = (s.get(k, float("nan")) for k in ("rps", "p50_ms", "p99_ms"))
        return f"{rps:.1f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms{errors}"

    graph = pick["metrics"].get("speedup_vs_baseline")
    beside = f" (graph timing {graph:.2f}x)" if isinstance(graph, int | float) else ""
    return (
        f"{how}: {pick['label']} {one(pick)}; baseline {one(base)}: "
        f"{dep.get('ratio', float('nan')):.2f}x served{beside}"
    )


def environment_line(manifest: dict[str, Any]) -> str:
    """Where the numbers were measured: what int8 speedups and latencies depend on."""
    env = manifest["environment"]
    threads = env.get("threads") or {}
    return (
        f"CPU: {env.get('cpu_model') or '?'} ({env.get('cpus') or '?'} CPUs; "
        f"{env.get('cpu_flags') or 'no AVX2'}); executor {env.get('executor', {}).get('kind')}; "
        f"providers {', '.join(env.get('providers', []))}; threads per task "
        f"{threads.get('per_task', '?')}, latency timed with {threads.get('latency', '?')}"
    )


def markdown(manifest: dict[str, Any]) -> str:
    """The run as Markdown: summary, environment and the variant table."""
    rows = table_rows(manifest)
    outcome = outcome_line(manifest.get("peers"))
    lines = [
        f"# {title(manifest)}",
        "",
        *([f"**{outcome}**", ""] if outcome else []),
        f"- run `{manifest['run_id']}`: status **{manifest['status']}**",
        f"- spec hash: `{manifest['spec_hash']}`",
        f"- started {manifest['started']}, finished {manifest['finished']}",
        f"- {environment_line(manifest)}",
        f"- selected: {', '.join(manifest['selected']) or 'none'}",
        *(f"- {line}" for line in verdict_lines(manifest)),
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]]
    lines += search_lines(manifest) + sensitivity_lines(manifest)
    return "\n".join(lines) + "\n"


def _img(png: bytes | None, alt: str) -> str:
    return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""


def html_report(manifest: dict[str, Any], plots: list[tuple[str, bytes | None]]) -> str:
    """A single self-contained HTML page: verdict, plots (embedded as data URIs), environment, table."""
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
    heading = html.escape(title(manifest))
    outcome = outcome_line(manifest.get("peers"))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{heading}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 7px;text-align:left}}tr.sel{{background:#fde2e2}}</style></head>
<body><h1>{heading}</h1>
{f'<p class="outcome"><b>{html.escape(outcome)}</b></p>' if outcome else ""}
<p>run <code>{html.escape(manifest["run_id"])}</code>: status <b>{html.escape(manifest["status"])}</b>;
spec hash <code>{html.escape(manifest["spec_hash"])}</code>;
selected: {html.escape(", ".join(manifest["selected"]) or "none")}</p>
<div class="verdict">{"".join(f"<p>{html.escape(line)}</p>" for line in verdict_lines(manifest))}</div>
{"".join(_img(png, alt) for alt, png in plots)}
<p class="environment">{html.escape(environment_line(manifest))}</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</body></html>
"""


def write_reports(manifest: dict[str, Any], run_dir: Path, select: SelectSpec) -> tuple[Path, Path]:
    """Write report.md, report.html and report.png (the decision in one picture: titled, the main
    plot) into `run_dir`; returns the paths of the first two."""
    from slimline.pipelines.report.plots import main_png, technique_png
    from slimline.pipelines.report.search import search_png

    run_dir.mkdir(parents=True, exist_ok=True)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    write_text(md_path, markdown(manifest))
    heading = "\n".join(line for line in (title(manifest), outcome_line(manifest.get("peers"))) if line)
    main = main_png(manifest, select.objectives, select.constraints, heading)
    write_text(run_dir / "report.png", main)
    plots = [
        ("speedup against fidelity", main),
        ("each technique on its own", technique_png(manifest)),
        ("search: score against wall time", search_png(manifest)),
    ]
    write_text(html_path, html_report(manifest, plots))
    return md_path, html_path
