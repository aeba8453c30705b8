"""The exit-2 contract: each bad input gets exit 2 and one line on stderr, never a traceback.

BAD_INPUTS is the table of known bad inputs (the test summary prints its size); the property
tests at the end throw generated specs and argument lists at the same contract.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

Setup = Callable[[Path, dict], list[str]]


def _spec(tmp: Path, base: dict, **changes: object) -> str:
    data = json.loads(json.dumps(base))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _raw(tmp: Path, body: bytes | str) -> str:
    path = tmp / "spec.yaml"
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return str(path)


def _data_file(tmp: Path, base: dict, name: str, body: bytes | str) -> list[str]:
    f = tmp / name
    f.write_bytes(body if isinstance(body, bytes) else body.encode())
    spec = _spec(tmp, base, data__eval={"path": str(f)})
    return ["run", spec, "--executor", "local", "--registry", "none"]


def _model_with(tmp: Path, base: dict, config: str) -> list[str]:
    model = tmp / "model"
    model.mkdir()
    (model / "config.json").write_text(config)
    return ["run", _spec(tmp, base, model__source=str(model)), "--executor", "local", "--registry", "none"]


def _store(tmp: Path) -> str:
    """The URI of an (empty) SQLite store that exists: read commands never create one."""
    from slimline.registry.store import client

    uri = f"sqlite:///{tmp / 'store.db'}"
    client(uri)
    return uri


def _push(tmp: Path, base: dict, spec_json: object, manifest: object) -> list[str]:
    run = tmp / "run"
    run.mkdir()
    (run / "spec.json").write_text(json.dumps(spec_json))
    (run / "manifest.json").write_text(json.dumps(manifest))
    return ["registry", "push", str(run), "--tracking-uri", f"sqlite:///{tmp / 'x.db'}"]


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)
GONE = {"id": "v1", "status": "succeeded", "onnx": "/nowhere/stages/quantize-x/model.onnx"}
VALID_MANIFEST = {"run_id": "r", "status": "succeeded", "variants": [], "selected": [], "baseline": {}}

# (id, how to build the command line, what the one line must say)
BAD_INPUTS: list[tuple[str, Setup, str]] = [
    ("non-UTF-8 spec", lambda t, b: ["validate", _raw(t, b"version: 1\nname: caf\xe9\n")], "not UTF-8"),
    (
        "duplicate key",
        lambda t, b: ["validate", _raw(t, "version: 1\nname: a\nname: b\n")],
        "duplicate key 'name'",
    ),
    ("YAML alias bomb", lambda t, b: ["validate", _raw(t, BOMB)], "aliases expand to more than"),
    (
        "empty grid axis",
        lambda t, b: ["validate", _spec(t, b, variants__pruning=[{"method": "magnitude", "sparsity": []}])],
        "sparsity: empty list",
    ),
    ("empty pruning list", lambda t, b: ["validate", _spec(t, b, variants__pruning=[])], "variants.pruning"),
    # issue 26: a Hub id this machine does not have and cannot fetch: one line before Ray starts
    (
        "Hub id offline",
        lambda t, b: ["run", _spec(t, b, model__source="someorg/not-here-model"), "--registry", "none"],
        "model.source 'someorg/not-here-model': ",
    ),
    (
        "neither a folder nor a Hub id",
        lambda t, b: ["run", _spec(t, b, model__source="a/b/c"), "--registry", "none"],
        "model.source 'a/b/c': not a local folder, a .gguf file or a Hugging Face id",
    ),
    # issue 26: a percentage for a fraction, and typos, get what was probably meant
    (
        "fidelity as a percentage",
        lambda t, b: ["validate", _spec(t, b, select__constraints={"fidelity": {"min": 98}})],
        "fidelity.min: 98 is outside fidelity's range; expected 0..1 — did you mean 0.98?",
    ),
    (
        "misspelt metric",
        lambda t, b: ["validate", _spec(t, b, select__constraints={"fidelty": {"min": 0.98}})],
        "unknown metric 'fidelty'; did you mean 'fidelity'?",
    ),
    (
        "misspelt setting",
        lambda t, b: [
            "validate",
            _spec(t, b, variants__quantization=[{"method": "dynamic-int8", "per_chanel": True}]),
        ],
        "per_chanel: unknown key (did you mean 'per_channel'?)",
    ),
    (
        "key at the wrong level",
        lambda t, b: ["validate", _spec(t, b, quantisation=["none"])],
        "quantisation: unknown key (did you mean 'variants.quantization'?)",
    ),
    (
        "misspelt technique",
        lambda t, b: ["validate", _spec(t, b, variants__quantization=[{"method": "dynamik-int8"}])],
        "did you mean 'dynamic-int8'?",
    ),
    (
        "bool given as a string",
        lambda t, b: [
            "validate",
            _spec(t, b, variants__quantization=[{"method": "dynamic-int8", "per_channel": "yes"}]),
        ],
        "per_channel",
    ),
    (
        "head_bits without affine int4",
        lambda t, b: [
            "validate",
            _spec(t, b, variants__quantization=[{"method": "int4-weight-only", "head_bits": 8}]),
        ],
        "variants.quantization[0].head_bits",
    ),
    (
        "model_name with a slash",
        lambda t, b: ["validate", _spec(t, b, registry__model_name="team/model")],
        "registry.model_name",
    ),
    (
        "300-character name",
        lambda t, b: ["validate", _spec(t, b, name="n" * 300)],
        "name: String should have at most 100",
    ),
    (
        "reserved alias in the spec",
        lambda t, b: ["validate", _spec(t, b, registry__alias="v2")],
        "reserved by MLflow",
    ),
    (
        "cron that never fires",
        lambda t, b: ["schedule", _spec(t, b, schedule={"cron": "0 3 31 2 *"}), "--next", "2"],
        "never fires",
    ),
    (
        "jsonl with a bad line",
        lambda t, b: _data_file(t, b, "d.jsonl", '{"text": "a"}\n{"text": \n'),
        "line 2: not JSON",
    ),
    (
        "jsonl with a non-object line",
        lambda t, b: _data_file(t, b, "d.jsonl", '{"text": "a"}\n[1, 2]\n'),
        "line 2: expected a JSON object",
    ),
    ("csv that is not UTF-8", lambda t, b: _data_file(t, b, "d.csv", b"text\ncaf\xe9\n"), "not UTF-8"),
    (
        "corrupt config.json",
        lambda t, b: _model_with(t, b, '{"model_type": "bert",'),
        "config.json is not valid JSON",
    ),
    ("config.json of no model", lambda t, b: _model_with(t, b, "[]"), 'has no "model_type"'),
    (
        "database without a driver",
        lambda t, b: ["registry", "ls", "--tracking-uri", "mssql://u:pw@db/x"],
        "driver is not installed",
    ),
    (
        "database that does not answer",
        lambda t, b: ["registry", "ls", "--tracking-uri", "postgresql://u:pw@127.0.0.1:9/x"],
        "u:***@127.0.0.1:9/x is unreachable",
    ),
    (
        "unknown store scheme",
        lambda t, b: ["registry", "ls", "--tracking-uri", "bogus://x"],
        "unknown scheme 'bogus'",
    ),
    (
        "folder as SQLite store",
        lambda t, b: ["registry", "ls", "--tracking-uri", f"sqlite:///{t}"],
        "is a folder",
    ),
    (
        "push with a bad spec.json",
        lambda t, b: _push(t, b, {"version": 7}, VALID_MANIFEST),
        "spec.json: version",
    ),
    ("push with a bad manifest", lambda t, b: _push(t, b, b, {"run_id": "r"}), "not a slimline manifest"),
    (
        "push of a graph that is gone",
        lambda t, b: _push(t, b, b, {**VALID_MANIFEST, "variants": [GONE], "selected": ["v1"]}),
        "variants[0].onnx: /nowhere/stages/quantize-x/model.onnx does not exist",
    ),
    (
        "promote to a reserved alias",
        lambda t, b: [
            "registry",
            "promote",
            "m",
            "1",
            "--alias",
            "v2",
            "--tracking-uri",
            f"sqlite:///{t / 'x.db'}",
        ],
        "reserved by MLflow",
    ),
    (
        "negative --max-in-flight",
        lambda t, b: ["run", _spec(t, b), "--max-in-flight", "-1"],
        "--max-in-flight",
    ),
    ("zero --threads", lambda t, b: ["run", _spec(t, b), "--threads", "0"], "--threads"),
    (
        "tick id leaving the artifacts",
        lambda t, b: ["run", _spec(t, b), "--tick-id", "x/../../../../tmp/escaped"],
        "--tick-id",
    ),
    ("unknown command", lambda t, b: ["deploy"], "No such command 'deploy'"),
    (
        "serve: replicas out of order",
        lambda t, b: ["serve", "m@champion", "--min-replicas", "3", "--max-replicas", "2"],
        "--max-replicas: expected at least min_replicas (3)",
    ),
    (
        "serve: a malformed ref",
        lambda t, b: ["serve", "m@a@b", "--emit", "k8s"],
        "expected NAME, NAME@alias or NAME/version",
    ),
    ("serve: follow without an alias", lambda t, b: ["serve", "m/1", "--follow"], "names no alias"),
    (
        "serve: a route prefix without its slash",
        lambda t, b: ["serve", "m@champion", "--route-prefix", "v1"],
        "--route-prefix 'v1': expected a URL path",
    ),
    (
        "serve: a route prefix with a space",
        lambda t, b: ["serve", "m@champion", "--route-prefix", "/my model"],
        "--route-prefix '/my model'",
    ),
    ("serve: negative GPUs", lambda t, b: ["serve", "m@champion", "--gpus", "-1"], "--gpus: "),
    (
        "serve: a host that is not one",
        lambda t, b: ["serve", "m@champion", "--host", "no such host"],
        "--host 'no such host'",
    ),
    (
        "serve: a tiny body limit",
        lambda t, b: ["serve", "m@champion", "--max-body-bytes", "1"],
        "--max-body-bytes",
    ),
    (
        "serve: unknown model",
        lambda t, b: ["serve", "nope@champion", "--tracking-uri", _store(t)],
        "no registered model 'nope'",
    ),
    (
        "password never echoed",
        lambda t, b: ["registry", "ls", "--tracking-uri", "http://me:s3cret@127.0.0.1:9"],
        "me:***@",
    ),
]


@pytest.fixture()
def base(tiny_model, tiny_spec, tmp_path) -> dict:
    return tiny_spec(tiny_model("bert"), "feature-extraction", tmp_path / "artifacts")


def assert_one_line_exit_2(res, expected: str = "") -> None:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    assert "Traceback" not in res.stderr and "s3cret" not in res.stderr + res.stdout
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize(("setup", "expected"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_one_line_and_exit_2(cli, base, tmp_path, setup: Setup, expected: str) -> None:
    assert_one_line_exit_2(cli(*setup(tmp_path, base)), expected)


# --- property tests: whatever the input, exit 0 or exit 2 with one line -------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

KEYS = [
    "version",
    "name",
    "model",
    "source",
    "task",
    "data",
    "eval",
    "builtin",
    "path",
    "samples",
    "variants",
    "pruning",
    "quantization",
    "method",
    "amount",
    "sparsity",
    "per_channel",
    "select",
    "constraints",
    "objectives",
    "fidelity",
    "min",
    "max",
    "registry",
    "model_name",
    "alias",
    "schedule",
    "cron",
    "evaluate",
    "latency",
    "repeats",
    "artifacts",
    "export",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["none", "heads", "dynamic-int8", "corpus", "feature-extraction", "0 3 * * *", "1", ""]),
    st.text(max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=25,
)
# 30 fresh examples a run (CI keeps no example database, so each run explores anew): ~20 s of
# `make test`'s 30-minute budget rather than 45.
PROPERTY = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_exit_0_or_one_line(res) -> None:
    assert res.returncode in (0, 2), (res.returncode, res.stderr[-2000:])
    if res.returncode == 2:
        assert_one_line_exit_2(res)


@PROPERTY
@given(
    doc=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8),
    raw=st.binary(max_size=40),
    as_raw=st.booleans(),
)
def test_any_spec_validates_or_gets_one_line(
    cli, base, tmp_path, doc: dict, raw: bytes, as_raw: bool
) -> None:
    """Generated documents, some grafted onto a valid spec, some raw bytes: never a traceback."""
    path = tmp_path / "gen.yaml"
    if as_raw:
        path.write_bytes(raw)
    else:
        path.write_text(yaml.safe_dump({**base, **doc}, allow_unicode=True))
    assert_exit_0_or_one_line(cli("validate", str(path)))


OPTIONS = {
    "validate": [],
    "plan": [],
    "schedule": ["--next", "--emit", "--once"],
    "run": ["--threads", "--max-in-flight", "--tick-id", "--executor", "--registry"],
}
ARGS = st.one_of(
    st.sampled_from(["-1", "0", "3", "crontab", "k8s", "local", "none", "../x", "--bogus"]),
    st.text(max_size=8),
)


@PROPERTY
@given(
    command=st.sampled_from(sorted(OPTIONS)),
    spec_kind=st.sampled_from(["good", "missing", "text"]),
    data=st.data(),
)
def test_any_argument_list_runs_or_gets_one_line(
    cli, base, tmp_path, command: str, spec_kind: str, data
) -> None:
    """Generated argument lists on real commands. `run` is only given arguments that fail before a
    sweep starts (a bad option, or a spec that does not load), so the test stays fast."""
    options = data.draw(st.lists(st.tuples(st.sampled_from(OPTIONS[command] or ["--x"]), ARGS), max_size=3))
    base = {**base, "schedule": {"cron": "0 3 * * *"}}
    spec = {
        "good": _spec(tmp_path, base),
        "missing": str(tmp_path / "nope.yaml"),
        "text": _raw(tmp_path, "- a\n"),
    }
    args = [command, spec[spec_kind], *(x for pair in options for x in pair)]
    if command == "run" and spec_kind == "good":
        args += ["--threads", "-5"]  # keeps the sweep from starting whatever else was drawn
    if command == "schedule" and not any(o in ("--next", "--emit") for o, _ in options):
        args += ["--next", "1"]  # a bare `schedule` would wait for the next fire time
    assert_exit_0_or_one_line(cli(*args))


@pytest.fixture()
def not_mlflow() -> Iterator[str]:
    """A web server on loopback that answers /health with 200 and everything else with a page."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"OK" if self.path == "/health" else b"<html>a dashboard</html>"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_server_that_is_not_mlflow_is_named(cli, not_mlflow: str) -> None:
    assert_one_line_exit_2(cli("registry", "ls", "--tracking-uri", not_mlflow), "not an MLflow version")


def test_passwords_quoted_by_libraries_are_masked() -> None:
    from slimline.registry.store import mask_secrets, masked

    text = "Max retries exceeded with url: https://ci:s3cr%40t@host:5000/api (postgresql://u:pw@db/x)"
    assert (
        mask_secrets(text)
        == "Max retries exceeded with url: https://ci:***@host:5000/api (postgresql://u:***@db/x)"
    )
    assert masked("https://token@host/x") == "https://***@host/x"
    assert masked("http://host:5000") == "http://host:5000"
