"""Headless Chromium opens the MLflow UI and finds what slimline registered there.

Chromium comes from Debian (the Makefile's test set-up installs it); playwright drives it. The
screenshot is kept in test-artifacts/ at the repository root.
"""

from __future__ import annotations

import yaml
from playwright.sync_api import expect


def test_mlflow_ui_shows_the_model_its_versions_and_the_champion(
    mlflow_server, tiny_model, tiny_spec, slimline, tmp_path, browser, shots
) -> None:
    variants = {
        "pruning": ["none", {"method": "ffn", "amount": 0.5}],
        "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}],
    }
    select = {"constraints": {"fidelity": {"min": 0.5}}, "objectives": ["size_mb", "fidelity"], "top_k": 2}
    spec = tiny_spec(
        tiny_model("bert"),
        "feature-extraction",
        tmp_path / "artifacts",
        variants=variants,
        select=select,
        registry={"model_name": "ui-check"},
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    res = slimline("run", str(path), "--executor", "local", "--tracking-uri", mlflow_server.uri)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "registered ui-check version 2" in res.stdout  # two versions to find on the page

    page = browser.new_page(viewport={"width": 1600, "height": 1800})
    page.goto(f"{mlflow_server.uri}/#/models/ui-check", wait_until="domcontentloaded")
    expect(page.get_by_text("ui-check").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Version 1").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Version 2").first).to_be_visible(timeout=60_000)
    # The alias is shown in the versions table's Aliases column, on version 1's row.
    row = page.get_by_role("row").filter(has_text="Version 1")
    expect(row.get_by_text("champion")).to_be_visible(timeout=60_000)
    page.screenshot(path=str(shots / "mlflow-ui-model.png"), full_page=True)
    assert (shots / "mlflow-ui-model.png").stat().st_size > 10_000
    # issue 26: a version's page says in words what it is and why it was chosen.
    page.goto(f"{mlflow_server.uri}/#/models/ui-check/versions/1", wait_until="domcontentloaded")
    expect(page.get_by_text("Version 1").first).to_be_visible(timeout=60_000)
    page.get_by_text("Description").first.click()  # the UI shows it folded
    expect(page.get_by_text("Chosen as pick #1").first).to_be_visible(timeout=60_000)
    page.screenshot(path=str(shots / "mlflow-ui-version.png"), full_page=True)
