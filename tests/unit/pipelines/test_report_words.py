"""The report says the decision in words (issue 26): a title with the spec and the outcome, id and
registry-version columns, and a champion line naming the version and what it is."""

from __future__ import annotations

from slimline.pipelines.report.report import decision_line, markdown, table_rows, title


def _manifest(**over: object) -> dict:
    rows = [
        {"id": "v-base", "label": "none × none", "status": "succeeded", "metrics": {"fidelity": 1.0}},
        {
            "id": "v-pc",
            "label": "none × dynamic-int8(per_channel=True)",
            "status": "succeeded",
            "metrics": {"fidelity": 0.994},
        },
    ]
    m = {
        "run_id": "my-embedder-20261206T101010Z-abc123",
        "spec_hash": "h",
        "status": "succeeded",
        "started": "s",
        "finished": "f",
        "environment": {},
        "baseline": {"variant": "v-base"},
        "variants": rows,
        "selected": ["v-pc"],
        "rejected": {},
        "registered": [{"name": "my-embedder", "version": "3", "variant": "v-pc"}],
        "gate": {"alias": "champion", "moved": True, "reason": "faster", "candidate": "3", "previous": "2"},
    }
    return {**m, **over}


def test_title_columns_and_champion_line_name_the_decision() -> None:
    m = _manifest()
    assert title(m) == "my-embedder: version 3 (none × dynamic-int8(per_channel=True)) is the new champion"
    head, base, pick = table_rows(m)
    assert head[:5] == ["#", "id", "variant", "version", "status"]
    assert pick[1:4] == ["v-pc", "none × dynamic-int8(per_channel=True)", "3"] and base[3] == "-"
    line = decision_line(m)
    assert line == "champion: version 3 (none × dynamic-int8(per_channel=True)) replaces version 2 (faster)"
    assert markdown(m).startswith(f"# {title(m)}\n")

    stays = _manifest(gate={"alias": "champion", "moved": False, "reason": "not better", "previous": "2"})
    assert decision_line(stays) == "champion: version 2 stays: not better"
    assert title(stays) == "my-embedder: picked none × dynamic-int8(per_channel=True)"
    first = _manifest(
        gate={"alias": "champion", "moved": True, "reason": "no current champion", "candidate": "3"}
    )
    assert "is the first champion (no current champion)" in decision_line(first)
