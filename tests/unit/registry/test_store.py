"""`bound`: MLflow's process-wide tracking URI pointed somewhere for a block, then put back exactly."""

from __future__ import annotations

import mlflow
import pytest

from slimline.registry.store import bound


def test_bound_leaves_mlflow_following_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    first, second, inside = (f"sqlite:///{tmp_path / n}.db" for n in ("a", "b", "c"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", first)
    with bound(inside):
        assert mlflow.get_tracking_uri() == inside
    assert mlflow.get_tracking_uri() == first
    # A pinned global would still say `first` here: the next test's store would be ignored.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", second)
    assert mlflow.get_tracking_uri() == second


def test_bound_restores_an_explicitly_set_uri(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pinned = f"sqlite:///{tmp_path / 'p'}.db"
    mlflow.set_tracking_uri(pinned)
    try:
        with bound(f"sqlite:///{tmp_path / 'x'}.db"):
            pass
        assert mlflow.get_tracking_uri() == pinned
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
