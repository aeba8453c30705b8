"""`slimline serve` as a user runs it: a real sweep, started from the Python API, registers two
versions in SQLite MLflow, the CLI serves NAME@champion on Ray Serve (127.0.0.1) with --follow, and
a client checks answers (the same as `slimline.load` gives), errors, an alias move under steady
traffic, and that stopping frees the port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from mlflow import MlflowClient
from transformers import AutoTokenizer

from slimline import api

TEXTS = ["The river rose after a week of rain.", "A short one.", "Prices fell again this spring, sharply."]


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_model, tiny_spec) -> dict:
    """A sweep of a tiny encoder, run by `slimline.run`, that registers two int8 versions of `tiny-serve`."""
    root = tmp_path_factory.mktemp("serve")
    store = f"sqlite:///{root / 'mlflow.db'}"
    spec = tiny_spec(
        tiny_model("bert", init_range=0.2),
        "feature-extraction",
        root / "artifacts",
        variants={
            "pruning": ["none"],
            "quantization": [{"method": "dynamic-int8", "per_channel": [False, True]}],
        },
        # Per-channel is more faithful, per-tensor smaller: both on the frontier, both registered.
        select={"constraints": {"fidelity": {"min": 0.5}}, "objectives": ["size_mb", "fidelity"], "top_k": 2},
        registry={"model_name": "tiny-serve", "tracking_uri": store},
    )
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    manifest = api.run(path, executor="local")  # the spec's own tracking URI, as the CLI reads it
    assert manifest.status == "succeeded" and len(manifest.registered) == 2, manifest.status
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    versions = sorted(int(v.version) for v in client.search_model_versions("name='tiny-serve'"))
    assert len(versions) == 2, versions
    champion = client.get_model_version_by_alias("tiny-serve", "champion").version
    return {"root": root, "store": store, "versions": versions, "champion": str(champion)}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def server(registry, port_factory) -> Iterator[dict]:
    """`slimline serve tiny-serve@champion --follow` in its own process, stopped by the last test."""
    port = port_factory()
    exe = Path(sys.executable).with_name("slimline")
    cmd = [str(exe), "serve", "tiny-serve@champion", "--follow", "--poll-s", "0.5", "--port", str(port)]
    cmd += ["--tracking-uri", registry["store"], "--max-batch-size", "4"]
    env_home = {"XDG_CACHE_HOME": str(registry["root"] / "cache")}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env_home}
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    deadline = time.monotonic() + 240
    while not any(line.startswith("serving") for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"serve did not start: {proc.stderr.read()[-3000:]}")
        time.sleep(0.5)
    yield {"proc": proc, "port": port, "lines": lines, "url": f"http://127.0.0.1:{port}"}
    if proc.poll() is None:
        proc.kill()


def _direct(folder: Path, texts: list[str]) -> np.ndarray:
    """Mean-pooled embeddings from a plain ORT session on the pulled file, the texts as one batch.

    One batch, as the server ran them: dynamic int8 quantizes activations with one scale per
    call, so a text's output moves (~1e-2 here) with the other texts of its batch.
    """
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    tok = AutoTokenizer.from_pretrained(str(folder))
    names = [i.name for i in sess.get_inputs()]
    enc = tok(texts, return_tensors="np", padding=True, truncation=True, max_length=128)
    feed = {n: enc[n].astype(np.int64) if n in enc else np.zeros_like(enc["input_ids"]) for n in names}
    hidden = sess.run(None, feed)[0].astype(np.float64)
    mask = enc["attention_mask"][..., None].astype(np.float64)
    return (hidden * mask).sum(1) / mask.sum(1)


def test_embeddings_equal_a_direct_run_of_the_registered_file(server, registry, slimline, tmp_path) -> None:
    pulled = tmp_path / "pulled"
    got = slimline("registry", "pull", f"tiny-serve/{registry['champion']}", "-o", str(pulled),
                   "--tracking-uri", registry["store"])  # fmt: skip
    assert got.returncode == 0, got.stderr
    r = httpx.post(server["url"] + "/embed", json={"texts": TEXTS}, timeout=60)
    assert r.status_code == 200, r.text
    served = np.array(r.json()["embeddings"])
    np.testing.assert_allclose(served, _direct(pulled, TEXTS), atol=1e-5)
    model = httpx.get(server["url"] + "/model", timeout=30).json()
    assert model["name"] == "tiny-serve" and model["version"] == registry["champion"]
    assert model["alias"] == "champion" and len(model["lineage"]["variant_id"]) > 8
    assert httpx.get(server["url"] + "/healthz", timeout=30).json() == {"status": "ok"}


def test_the_python_api_loads_what_the_endpoint_serves(server, registry, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # where slimline.load pulls the version
    model = api.load("tiny-serve@champion", tracking_uri=registry["store"])
    r = httpx.post(server["url"] + "/embed", json={"texts": TEXTS}, timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(model.embed(TEXTS), np.array(r.json()["embeddings"]), atol=1e-5)
    with pytest.raises(api.TaskError, match=r"use \.embed"):
        model.classify(TEXTS)


@pytest.mark.parametrize(
    ("path", "body", "code", "says"),
    [
        ("/embed", {"text": ["x"]}, 422, "body.texts: Field required"),
        ("/embed", {"texts": []}, 422, "body.texts"),
        ("/embed", {"texts": [1, 2]}, 422, "body.texts.0"),
        ("/embed", "not json", 422, "JSON decode error"),
        ("/embed", {"texts": ["x"] * 300}, 422, "at most 256 per request"),
        ("/classify", {"texts": ["x"]}, 404, "use POST /embed"),
    ],
)
def test_a_bad_request_gets_a_clear_4xx(server, path, body, code, says) -> None:
    kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, str) else {}
    r = httpx.post(server["url"] + path, timeout=30, **(kw or {"json": body}))
    assert r.status_code == code, r.text
    assert says in r.json()["detail"]


def test_promote_under_traffic_swaps_the_version_with_no_failed_request(server, registry, slimline) -> None:
    other = str(next(v for v in registry["versions"] if str(v) != registry["champion"]))
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=server["url"], timeout=120) as c:
            while not stop.is_set():
                try:
                    r = c.post("/embed", json={"texts": TEXTS[:2]})
                    if r.status_code == 200:
                        seen.append(r.json()["version"])
                    else:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(2)
    got = slimline("registry", "promote", "tiny-serve", other, "--alias", "champion",
                   "--tracking-uri", registry["store"])  # fmt: skip
    assert got.returncode == 0, got.stderr
    deadline = time.monotonic() + 180
    while httpx.get(server["url"] + "/model", timeout=60).json()["version"] != other:
        assert time.monotonic() < deadline, server["lines"]
        time.sleep(0.5)
    time.sleep(2)  # traffic keeps flowing on the new version
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures[:5]
    assert registry["champion"] in seen and other in seen
    assert seen.index(other) > seen.index(registry["champion"])
    assert any(f"version {registry['champion']} -> {other}" in line for line in server["lines"])


def test_stopping_releases_the_port(server) -> None:
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    assert any(line.startswith("stopped") for line in server["lines"])
    deadline = time.monotonic() + 30
    while not _port_free(server["port"]):
        assert time.monotonic() < deadline, "the port is still taken"
        time.sleep(0.5)


def test_follow_needs_an_alias_and_a_taken_port_is_exit_2(registry, slimline) -> None:
    store = registry["store"]
    got = slimline("serve", "tiny-serve/1", "--follow", "--tracking-uri", store)
    assert got.returncode == 2 and "names no alias" in got.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        got = slimline("serve", "tiny-serve@champion", "--port", str(port), "--tracking-uri", store)
    assert got.returncode == 2 and f"--port {port}" in got.stderr
    assert len(got.stderr.strip().splitlines()) == 1
    got = slimline("serve", "tiny-serve@nope", "--tracking-uri", store)
    assert got.returncode == 2 and "no alias 'nope'" in got.stderr


def test_a_runs_variant_id_serves_its_graph_folder(registry) -> None:
    from slimline.cli.serve import resolve

    artifacts = registry["root"] / "artifacts"
    (manifest_path,) = artifacts.glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    vid = manifest["selected"][0]
    source = resolve(vid, registry["store"], artifacts)
    row = next(v for v in manifest["variants"] if v["id"] == vid)
    assert source.variant == vid and source.name is None
    assert Path(source.folder) == Path(row["onnx"]).parent and (Path(source.folder) / "model.onnx").is_file()
    assert source.lineage["run_id"] == manifest["run_id"]
