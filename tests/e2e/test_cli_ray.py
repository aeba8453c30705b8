"""The `slimline` CLI as a user runs it, on its default executor (an embedded Ray)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

VARIANTS = {
    "pruning": ["none", {"method": "heads", "amount": 0.5}, {"method": "ffn", "amount": 0.5}],
    "quantization": ["none", {"method": "dynamic-int8", "per_channel": True}],
}


@pytest.fixture()
def spec_file(tiny_model, tiny_spec, tmp_path) -> Path:
    path = tmp_path / "spec.yaml"
    spec = tiny_spec(tiny_model("bert"), "feature-extraction", tmp_path / "artifacts", variants=VARIANTS)
    path.write_text(yaml.safe_dump(spec))
    return path


def _manifest(spec_file: Path) -> dict:
    (path,) = (spec_file.parent / "artifacts").glob("*/manifest.json")
    return json.loads(path.read_text())


def test_run_prints_table_and_reports_then_resumes_cached(spec_file, slimline) -> None:
    first = slimline("run", str(spec_file))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "selected #1" in first.stdout and "report.html" in first.stdout
    # Outside a terminal the progress display is one log line per finished stage, on stderr.
    assert "succeeded export" in first.stderr and "succeeded latency" in first.stderr
    # issue 26: quiet by default: every stderr line is slimline's own (no MLflow, Ray or
    # Starlette INFO or warning).
    ours = re.compile(r"\[\s*\d+\.\ds\] |warning: this CPU has no VNNI")  # progress, and our own warning
    noise = [x for x in first.stderr.splitlines() if x.strip() and not ours.match(x)]
    assert noise == [], noise
    again = slimline("run", str(spec_file), "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    m = json.loads(again.stdout)
    assert m["environment"]["executor"]["kind"] == "ray"
    assert {v["status"] for v in m["variants"]} == {"cached"}
    # Nothing was recomputed; only latency is measured afresh, so that ratios come from one run,
    # and the champion the first run registered is evaluated on this run's data (once).
    recomputed = [x for x in again.stderr.splitlines() if "succeeded" in x]
    assert [x.split()[3] for x in recomputed if "champion v1" not in x] == ["latency"], recomputed
    # Six timings a graph tell no graph apart: every speed is a tie, fidelity picks the same best.
    assert m["champion"]["version"] == "1" and "already champion" in m["gate"]["reason"]
    # issue 26: `slimline ui` on that store is quiet too: its own line, then nothing from MLflow,
    # uvicorn or Starlette while it serves, and nothing when Ctrl-C stops it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = str(Path(sys.executable).with_name("slimline"))
    ui = subprocess.Popen([exe, "ui", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        try:
            assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
            break
        except OSError:
            assert ui.poll() is None, ui.communicate()[1]
            assert time.monotonic() < deadline, "the UI did not answer in 120 s"
            time.sleep(0.5)
    os.killpg(ui.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole process group
    _, err = ui.communicate(timeout=60)
    store = os.environ["MLFLOW_TRACKING_URI"]
    assert err.splitlines() == [f"MLflow UI for {store} on http://127.0.0.1:{port} (Ctrl-C to stop)"]


def test_gpus_on_a_cluster_without_gpus_is_exit_two(spec_file, slimline) -> None:
    spec = yaml.safe_load(spec_file.read_text())
    spec["resources"] = {"gpus_per_task": 1, "cpus_per_task": 1}
    spec_file.write_text(yaml.safe_dump(spec))
    res = slimline("run", str(spec_file), timeout=300)
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and str(spec_file) in line and "resources.gpus_per_task" in line


def test_ctrl_c_leaves_a_consistent_manifest_and_resume_recomputes_nothing(spec_file) -> None:
    exe = Path(sys.executable).with_name("slimline")
    proc = subprocess.Popen(
        [str(exe), "run", str(spec_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # interrupt once the first export is done and the sweep is mid-way
        if "succeeded export" in line:
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    m = _manifest(spec_file)
    assert m["interrupted"] is True and m["status"] == "failed"
    assert any(v["reason"] == "interrupted" for v in m["variants"])
    stages = spec_file.parent / "artifacts" / "stages"
    finished = {p: p.stat().st_mtime_ns for p in stages.glob("*.json")}
    assert any(p.name.startswith("export-") for p in finished)
    exe_res = subprocess.run([str(exe), "run", str(spec_file), "--json"], capture_output=True, text=True)
    assert exe_res.returncode == 0, exe_res.stderr[-3000:]
    # Every stage that had finished before Ctrl-C was reused as it was, not rewritten.
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    assert json.loads(exe_res.stdout)["status"] == "succeeded"


def _busy_ray_workers() -> list[int]:
    """Pids of Ray workers running a slimline stage (their process title is `ray::slimline:<kind>`)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0]
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and title.startswith(b"ray::slimline:"):
            pids.append(int(proc.name))
    return pids


def test_json_stdout_is_one_document_when_a_worker_dies(spec_file) -> None:
    exe = Path(sys.executable).with_name("slimline")
    proc = subprocess.Popen(
        [str(exe), "run", str(spec_file), "--json", "--registry", "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    killed = []
    for line in proc.stderr:  # once the sweep is under way, kill a worker in the middle of a stage
        if "succeeded export" in line:
            deadline = time.monotonic() + 30
            while not killed and time.monotonic() < deadline:
                for pid in _busy_ray_workers()[:1]:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.05)
            break
    out, err = proc.communicate(timeout=600)
    assert killed, "no Ray worker was busy with a stage"
    manifest = json.loads(out)  # Ray's "(raylet) A worker died ..." went to stderr, not here
    # The killed stage was retried on another worker: every variant succeeded, and no stage was
    # computed twice (each logs one line when it finishes; the killed attempt never finished).
    assert manifest["status"] == "succeeded" and proc.returncode == 0, err[-3000:]
    assert {v["status"] for v in manifest["variants"]} == {"succeeded"}
    done = [
        re.sub(r" \(\d+\.\ds\)$", "", line.split("] succeeded", 1)[1]).split()
        for line in err.splitlines()
        if "] succeeded" in line
    ]
    assert len(done) == len({tuple(d) for d in done}), done
