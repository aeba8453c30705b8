"""The MLflow adapter on a real SQLite store: tracking, registration, idempotence, the gate, browsing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from slimline.pipelines.errors import FatalInputError
from slimline.pipelines.run.local import LocalExecutor
from slimline.pipelines.run.publish import publish
from slimline.pipelines.run.run import run
from slimline.pipelines.spec.spec import Spec
from slimline.registry.adapter import MlflowRegistry
from slimline.registry.browse import Browser, Ref, UnknownModel
from slimline.registry.store import RegistryUnreachable, check_reachable
from slimline.tasks.graph import feeds_for
from slimline.tasks.runtime import session

VARIANTS = {
    "pruning": ["none", {"method": "heads", "amount": 0.5}],
    "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}],
}


@pytest.fixture(scope="module")
def finished(tiny_model, tiny_spec, tmp_path_factory) -> tuple[Spec, dict, Path]:
    """One real sweep on a tiny BERT (local executor), before anything is registered."""
    d = tmp_path_factory.mktemp("reg")
    spec = Spec.model_validate(
        tiny_spec(
            tiny_model("bert"),
            "feature-extraction",
            d / "artifacts",
            variants=VARIANTS,
            select={
                "constraints": {"fidelity": {"min": 0.5}},
                "objectives": ["size_mb", "fidelity"],
                "top_k": 2,
            },
            # The two picks differ in size by well under 5%: any gain on the first objective counts.
            registry={"model_name": "tiny-bert", "alias": "champion", "min_gain": 0.0},
        )
    )
    manifest = run(spec, LocalExecutor())
    assert len(manifest["selected"]) == 2  # smallest vs most faithful: a two-point frontier at least
    return spec, manifest, d / "artifacts" / manifest["run_id"]


@pytest.fixture()
def store(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'slimline.db'}"


def _versions(uri: str, name: str) -> list:
    return MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(f"name='{name}'")


def test_publish_tracks_registers_with_lineage_and_is_idempotent(finished, store) -> None:
    spec, manifest, run_dir = finished
    out = publish(MlflowRegistry(store), copy.deepcopy(manifest), spec, run_dir)
    assert [r["variant"] for r in out["registered"]] == manifest["selected"]
    assert out["registered"][0]["aliases"] == ["champion"]
    assert out["gate"]["moved"] and out["gate"]["reason"] == "no current champion"
    versions = {v.tags["slimline.variant_id"]: v for v in _versions(store, "tiny-bert")}
    assert set(versions) == set(manifest["selected"])
    best = versions[manifest["selected"][0]]
    assert best.tags["slimline.spec_hash"] == manifest["spec_hash"]
    assert best.tags["slimline.base_model_digest"] == manifest["base_model_digest"] != "None"
    assert json.loads(best.tags["slimline.metrics"])["size_mb"] == pytest.approx(
        next(v for v in manifest["variants"] if v["id"] == best.tags["slimline.variant_id"])["metrics"][
            "size_mb"
        ]
    )
    client = MlflowClient(tracking_uri=store)
    parents = client.search_runs(
        [client.get_experiment_by_name(spec.name).experiment_id],
        filter_string=f"tags.`slimline.run_id` = '{manifest['run_id']}'",
    )
    assert len(parents) == 1
    children = client.search_runs(
        [parents[0].info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'",
    )
    assert len(children) == len(manifest["variants"])
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id)} >= {"manifest.json", "report.html"}

    # Publishing the same run again, or resuming it, adds nothing.
    again = publish(MlflowRegistry(store), copy.deepcopy(manifest), spec, run_dir)
    assert len(_versions(store, "tiny-bert")) == len(manifest["selected"])
    assert not again["gate"]["moved"] and "already champion" in again["gate"]["reason"]
    assert (
        len(
            client.search_runs(
                [parents[0].info.experiment_id], filter_string="tags.`slimline.run_id` LIKE '%'"
            )
        )
        == 1
    )


def test_the_champion_gate_moves_and_stays(finished, store) -> None:
    spec, manifest, run_dir = finished
    reg = MlflowRegistry(store)
    publish(reg, copy.deepcopy(manifest), spec, run_dir)
    second = next(r for r in _versions(store, "tiny-bert") if str(r.version) != "1")
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    # A worse champion (the runner-up) is re-measured in the next run and replaced by the best...
    client.set_registered_model_alias("tiny-bert", "champion", second.version)
    rerun = run(spec, LocalExecutor(), registry=reg)
    assert (
        rerun["champion"]["version"] == str(second.version) and rerun["champion"]["metrics"]["fidelity"] > 0
    )
    moved = publish(reg, copy.deepcopy(rerun), spec, run_dir)["gate"]
    assert moved["moved"] and moved["previous"] == str(second.version) and "beats" in moved["reason"]
    # ...a champion that measured better on the first objective keeps the alias...
    client.set_registered_model_alias("tiny-bert", "champion", second.version)
    better = copy.deepcopy(rerun)
    better["champion"]["metrics"]["size_mb"] = 0.001
    stays = publish(reg, better, spec, run_dir)["gate"]
    assert not stays["moved"] and "does not beat" in stays["reason"]
    # ...and one that was not measured in this run is never compared with its old numbers.
    unmeasured = {**copy.deepcopy(manifest), "champion": None}
    refused = publish(reg, unmeasured, spec, run_dir)["gate"]
    assert not refused["moved"] and "never compared with old numbers" in refused["reason"]
    assert client.get_model_version_by_alias("tiny-bert", "champion").version == second.version


def test_browse_and_pull(finished, store, tmp_path, texts, cli) -> None:
    spec, manifest, run_dir = finished
    publish(MlflowRegistry(store), copy.deepcopy(manifest), spec, run_dir)
    b = Browser(store)
    (row,) = b.ls()
    assert row["name"] == "tiny-bert" and row["aliases"] == {"champion": "1"} and row["versions"] == 2
    # issue 26: the champion's row is the champion's, the latest version's apart (it was mixed up).
    v1, v2 = (b.show(Ref.parse(f"tiny-bert/{n}")) for n in (1, 2))
    assert row["champion"]["version"] == "1" and row["champion"]["label"] == v1["label"]
    assert row["latest"] == "2" and row["label"] == v2["label"] and v1["label"] != v2["label"]
    # issue 26: each version says in words what it is; the model says which one is champion.
    c = MlflowClient(tracking_uri=store, registry_uri=store)
    described = c.get_model_version("tiny-bert", "1").description
    assert f"**{v1['label']}**" in described and "fidelity" in described and manifest["run_id"] in described
    assert c.get_registered_model("tiny-bert").description.startswith("`champion` is version 1, ")
    listed = cli("registry", "ls", "--tracking-uri", store)
    lines = [line for line in listed.stdout.splitlines() if "champion" in line and "tiny-bert" in line]
    assert lines and v1["label"] in lines[0] and v2["label"] not in lines[0]
    info = b.show(Ref.parse("tiny-bert@champion"))
    assert info["variant"] == manifest["selected"][0] and info["aliases"] == ["champion"]
    assert info["lineage"]["spec_hash"] == manifest["spec_hash"]
    assert set(b.compare("tiny-bert", "1", "@champion")) == {"tiny-bert/1", "tiny-bert@champion"}
    pulled = b.pull(Ref.parse("tiny-bert@champion"), tmp_path / "pulled")
    # The pulled graph is the variant's graph: same outputs, bit for bit, and it carries its tokenizer.
    original = Path(info["onnx_path"])
    feeds = feeds_for(pulled, texts[:3], 3, 12)
    np.testing.assert_array_equal(session(pulled).run(None, feeds)[0], session(original).run(None, feeds)[0])
    with pytest.raises(UnknownModel, match="no alias 'gold'"):
        b.show(Ref.parse("tiny-bert@gold"))
    with pytest.raises(UnknownModel, match="no registered model 'nope'"):
        b.show(Ref.parse("nope"))
    # issue 26: a misspelt alias or model name gets what was probably meant
    with pytest.raises(UnknownModel, match=r"no alias 'champoin' \(did you mean 'champion'\?\)"):
        b.show(Ref.parse("tiny-bert@champoin"))
    with pytest.raises(UnknownModel, match=r"\(did you mean 'tiny-bert'\?\) \(known: tiny-bert\)"):
        b.show(Ref.parse("tiny-bret@champion"))
    with pytest.raises(UnknownModel, match="no version 9"):
        b.show(Ref.parse("tiny-bert/9"))
    # A folder that already holds a model is refused; --force replaces it with this version's files.
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "model.onnx").write_text("an unrelated old graph")
    with pytest.raises(FatalInputError, match="not an empty folder"):
        b.pull(Ref.parse("tiny-bert/2"), stale)
    forced = b.pull(Ref.parse("tiny-bert/2"), stale, force=True)
    assert forced == stale / "model.onnx" and (stale / "meta.json").is_file()
    assert session(forced).run(None, feeds)[0].shape[0] == 3  # a real graph now, not the stale text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".stale.")]  # no download left over
    with pytest.raises(FatalInputError, match="reserved by MLflow"):
        b.promote("tiny-bert", "1", "v2")


def test_ls_lists_models_without_versions_and_names_with_quotes(store) -> None:
    c = MlflowClient(tracking_uri=store, registry_uri=store)
    c.create_registered_model("empty")
    c.create_registered_model("it's")
    rows = {r["name"]: r for r in Browser(store).ls()}
    assert rows["empty"]["versions"] == 0 and rows["empty"]["latest"] == "-"
    assert rows["it's"]["versions"] == 0
    with pytest.raises(UnknownModel, match="has no versions"):
        Browser(store).show(Ref.parse("it's"))


def test_unreachable_stores_are_named(tmp_path) -> None:
    with pytest.raises(RegistryUnreachable, match=r"http://127\.0\.0\.1:9/ is unreachable"):
        check_reachable("http://127.0.0.1:9/", timeout=2)
    # Credentials go in a header, not the host name, and never into the message.
    with pytest.raises(
        RegistryUnreachable, match=r"http://me:\*\*\*@127\.0\.0\.1:9/ is unreachable \(.*refused"
    ):
        check_reachable("http://me:s3cret@127.0.0.1:9/", timeout=2)
    with pytest.raises(RegistryUnreachable, match=r"mssql://me:\*\*\*@db/x: .*driver is not installed"):
        check_reachable("mssql://me:s3cret@db/x")
    with pytest.raises(RegistryUnreachable, match=r"postgresql://me:\*\*\*@127.0.0.1:9/x is unreachable"):
        check_reachable("postgresql://me:s3cret@127.0.0.1:9/x", timeout=2)
    with pytest.raises(RegistryUnreachable, match="unknown scheme 'bogus'"):
        check_reachable("bogus://x")
    with pytest.raises(RegistryUnreachable, match="is a folder, not a SQLite database file"):
        check_reachable(f"sqlite:///{tmp_path}")
    with pytest.raises(RegistryUnreachable, match="no/such/dir"):
        check_reachable("sqlite:///no/such/dir/x.db")


def test_a_parent_run_left_running_by_a_dead_publisher_is_closed(finished, store) -> None:
    import socket
    import subprocess
    import sys

    spec, manifest, run_dir = finished
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    client = MlflowClient(tracking_uri=store)
    exp = client.create_experiment(spec.name)
    tags = {
        "slimline.run_id": "crashed-run",
        "slimline.publisher": f"{socket.gethostname()}:{dead.stdout.strip()}",
    }
    crashed = client.create_run(exp, tags=tags).info.run_id
    alive = client.create_run(
        exp, tags={**tags, "slimline.run_id": "live", "slimline.publisher": "elsewhere:1"}
    )
    publish(MlflowRegistry(store), copy.deepcopy(manifest), spec, run_dir)
    assert client.get_run(crashed).info.status == "KILLED"
    assert "stopped before finishing" in client.get_run(crashed).data.tags["slimline.stale"]
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"  # another host's, and recent
