"""The HTML report in headless Chromium: both plots render, the verdict and environment are there.

The screenshot is kept in test-artifacts/report.png at the repository root.
"""

from __future__ import annotations

import json

import yaml
from playwright.sync_api import expect


def test_report_page_renders_its_plots(tiny_model, tiny_spec, tmp_path, cli, browser, shots) -> None:
    variants = {
        "pruning": ["none", {"method": "heads", "amount": 0.5}],
        "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}],
    }
    spec = tiny_spec(tiny_model("bert"), "feature-extraction", tmp_path / "artifacts", variants=variants)
    spec["evaluate"]["latency"]["repeats"] = 24  # enough pairs for confidence intervals
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    res = cli("run", str(path), "--executor", "local", "--registry", "none", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = tmp_path / "artifacts" / json.loads(res.stdout)["run_id"]
    md = (run_dir / "report.md").read_text()
    assert "CPU: " in md and "threads per task" in md
    page = browser.new_page(viewport={"width": 1400, "height": 2200})
    page.goto((run_dir / "report.html").as_uri())
    for alt in ("speedup against fidelity", "each technique on its own"):
        img = page.get_by_alt_text(alt)
        expect(img).to_be_visible()
        assert img.evaluate("i => i.naturalWidth") > 400  # a real decoded image, not a broken one
    expect(page.locator("div.verdict")).to_contain_text("no current champion")
    expect(page.locator("p.environment")).to_contain_text("CPU:")
    page.screenshot(path=str(shots / "report.png"), full_page=True)
    assert (shots / "report.png").stat().st_size > 10_000
