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
        # The run serves its pick and the baseline side by side and records what the endpoint does.
        evaluate={
            "latency": {"batch_size": 1, "sequence_length": 16, "warmup": 1, "repeats": 5},
            "serving": {"clients": 4, "requests": 40, "rounds": 2},
        },
    )
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    manifest = api.run(path, executor="local")  # the spec's own tracking URI, as the CLI reads it
    assert manifest.status == "succeeded" and len(manifest.registered) == 2, manifest.status
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    versions = sorted(int(v.version) for v in client.search_model_versions("name='tiny-serve'"))
    assert len(versions) == 2, versions
    champion = client.get_model_version_by_alias("tiny-serve", "champion").version
    return {
        "root": root,
        "store": store,
        "versions": versions,
        "champion": str(champion),
        "manifest": manifest.to_json(),
    }


def test_the_run_judged_the_deployment_and_the_registry_keeps_it(registry) -> None:
    """evaluate.serving: the pick and the baseline were served and loaded in the run; the numbers
    are in the manifest, the pick's row, the report and the registered version."""
    manifest = registry["manifest"]
    dep = manifest["deployed"]
    assert "error" not in dep, dep.get("error")
    pick, base = dep["variant"], dep["baseline"]
    assert pick == manifest["selected"][0] and base == manifest["baseline"]["variant"]
    for vid in (pick, base):
        got = dep["results"][vid]
        assert len(got["rounds"]) == 2 and got["errors"] == 0, got
        assert all(r["rps"] > 0 and r["p50_ms"] <= r["p99_ms"] for r in got["rounds"])
    rows = {r["id"]: r for r in manifest["variants"]}
    assert rows[pick]["served"]["rps"] == dep["results"][pick]["rps"]
    rounds = zip(dep["results"][pick]["rounds"], dep["results"][base]["rounds"], strict=True)
    paired = [p["rps"] / b["rps"] for p, b in rounds]
    assert min(paired) <= dep["ratio"] <= max(paired)  # the median of the rounds' paired ratios
    run_dir = Path(registry["root"]) / "artifacts" / manifest["run_id"]
    report = (run_dir / "report.md").read_text()
    assert "deployed (Ray Serve proxy, 4 clients, 1 text(s)/request)" in report
    client = MlflowClient(tracking_uri=registry["store"], registry_uri=registry["store"])
    version = next(
        v for v in client.search_model_versions("name='tiny-serve'") if v.tags["slimline.variant_id"] == pick
    )
    served = json.loads(version.tags["slimline.served"])
    assert served["p50_ms"] == rows[pick]["served"]["p50_ms"] and served["load"]["clients"] == 4


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


def _gen(total: int, chunk: int = 1 << 16) -> Iterator[bytes]:
    """A body sent chunked (no Content-Length): the server must count it as it streams."""
    for _ in range(total // chunk):
        yield b"x" * chunk


def _text_body(texts_json: bytes) -> bytes:
    return b'{"texts": ' + texts_json + b"}"


# (what, request kwargs, the status codes allowed, what the one line says)
HOSTILE: list[tuple[str, dict, tuple[int, ...], str]] = [
    ("2 MiB body", {"content": b" " * (2 << 20)}, (413,), "at most 1048576 per request"),
    ("2 MiB chunked", {"content": _gen(2 << 20)}, (413,), "at most 1048576 per request"),
    ("2M integers", {"content": _text_body(b"[" + b"0," * 2_000_000 + b"0]")}, (413,), "max_body_bytes"),
    ("200k integers", {"content": _text_body(b"[" + b"0," * 200_000 + b"0]")}, (422,), "body.texts"),
    ("300 texts", {"json": {"texts": ["x"] * 300}}, (422,), "at most 256 per request"),
    ("a 100k-char text", {"json": {"texts": ["ab " * 33_334]}}, (422,), "at most 20000 per text"),
    ("NaN", {"content": b'{"texts": [NaN]}'}, (422,), "JSON decode error"),
    ("a lone surrogate", {"content": b'{"texts": ["\\ud800"]}'}, (422,), "JSON decode error"),
    ("invalid UTF-8", {"content": b'{"texts": ["caf\xe9"]}'}, (422,), "UTF-8"),
    ("deep nesting", {"content": _text_body(b"[" * 100_000 + b"]" * 100_000)}, (422,), "depth"),
    ("form fields", {"data": {"texts": "a"}}, (422,), "JSON decode error"),
    ("multipart", {"files": {"texts": ("a.txt", b"hello")}}, (415,), "multipart/form-data"),
    ("gzip", {"content": b"x", "headers": {"content-encoding": "gzip"}}, (415,), "content-encoding"),
    ("a list", {"json": ["x"]}, (422,), "expected an object"),
    ("an empty body", {"content": b""}, (422,), "JSON decode error"),
]


def _serve_rss_mb(pid: int) -> dict[str, float]:
    """RSS (MB) of Serve's HTTP proxy and of its replicas, in the server's process tree."""
    import psutil

    rss = {"ProxyActor": 0.0, "ServeReplica": 0.0}
    for proc in _tree(pid):
        try:
            title = " ".join(proc.cmdline())
            for name in rss:
                if f"ray::{name}" in title:
                    rss[name] += proc.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return rss


def _tree(pid: int) -> list:
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def test_hostile_requests_get_a_one_line_4xx_and_memory_stays_bounded(server) -> None:
    before = _serve_rss_mb(server["proc"].pid)
    assert all(before.values()), before  # the proxy and the replica are in the server's tree
    with httpx.Client(base_url=server["url"], timeout=60) as c:
        for _ in range(5):  # again and again: whatever a request costs must be given back
            for what, kw, codes, says in HOSTILE:
                if isinstance(kw.get("content"), Iterator):
                    kw = {**kw, "content": _gen(2 << 20)}  # a generator is spent once
                r = c.post("/embed", **kw)
                assert r.status_code in codes, (what, r.status_code, r.text[:300])
                assert len(r.content) < 1000 and says in r.json()["detail"], (what, r.text[:300])
                assert "\n" not in r.json()["detail"], what
        # The README's `curl -d '{"texts": [...]}'` sends form content: it is read as JSON.
        r = c.post(
            "/embed",
            content=b'{"texts": ["a", "b"]}',
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 200 and len(r.json()["embeddings"]) == 2, r.text[:300]
        r = c.post("/embed", content=b'{"texts": ["a"]}', headers={"content-type": "text/plain"})
        assert r.status_code == 200, r.text[:300]
        # Under the character cap, a text longer than the model can take is truncated, not a 5xx.
        r = c.post("/embed", json={"texts": ["word " * 3_900, "a"]})
        assert r.status_code == 200 and len(r.json()["embeddings"]) == 2, r.text[:300]
    after = _serve_rss_mb(server["proc"].pid)
    grown = {k: after[k] - before[k] for k in before}
    assert all(g < 200 for g in grown.values()), (before, after)


def _fuzz(schema, mode, url: str, checks: list) -> None:
    """Up to 50 generated requests of `mode` on every operation, each answer checked."""
    from hypothesis import HealthCheck, given, settings

    quiet = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(max_examples=50, deadline=None, database=None, suppress_health_check=quiet)
    def fuzz(case) -> None:
        case.call_and_validate(base_url=url, checks=checks, timeout=60)

    fuzz()


def test_fuzzing_from_the_openapi_schema_gets_no_5xx_and_answers_as_documented(server) -> None:
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis import checks as sc

    schema = schemathesis.openapi.from_url(server["url"] + "/openapi.json")
    paths = {op.ok().path for op in schema.get_all_operations()}
    assert paths == {"/embed", "/healthz", "/model"}, paths  # only this model's endpoint
    checks = [sc.not_a_server_error, sc.status_code_conformance, sc.content_type_conformance]
    checks += [sc.response_schema_conformance]
    before = _serve_rss_mb(server["proc"].pid)
    _fuzz(schema, GenerationMode.POSITIVE, server["url"], [*checks, sc.positive_data_acceptance])
    _fuzz(schema, GenerationMode.NEGATIVE, server["url"], checks)  # schema-breaking bodies: 4xx
    after = _serve_rss_mb(server["proc"].pid)
    assert all(after[k] - before[k] < 200 for k in before), (before, after)


def test_every_listener_of_the_server_is_on_loopback(server) -> None:
    import ipaddress
    import socket as so

    import psutil

    bound = []
    for proc in _tree(server["proc"].pid):
        try:
            conns = proc.net_connections(kind="inet")
            title = " ".join(proc.cmdline())[:60]
        except psutil.Error:
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN or (c.type == so.SOCK_DGRAM and not c.raddr):
                bound.append((title, c.laddr.ip, c.laddr.port))
    assert any(port == server["port"] for _, _, port in bound), bound
    assert any("ServeReplica" in title for title, _, _ in bound), bound  # its gRPC port is in the tree
    addresses = [ipaddress.ip_address(ip) for _, ip, _ in bound]
    loopback = [getattr(a, "ipv4_mapped", None) or a for a in addresses]  # ::ffff:127.0.0.1 is too
    exposed = [b for b, a in zip(bound, loopback, strict=True) if not a.is_loopback]
    assert not exposed, exposed


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
    # Only our own lines: no Ray notice (such as its "(raylet) Task ServeController.graceful_shutdown
    # failed ... will be retried" on shutdown), no warning, no traceback.
    noise = ("(raylet)", "WARNING", "Warning", "Traceback", "Error")
    said = server["lines"] + proc.stderr.read().splitlines()
    assert not [line for line in said if any(n in line for n in noise)], said
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
