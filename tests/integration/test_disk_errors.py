"""A full or read-only disk (issue 25): one line naming the path, exit 1, nothing written half."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import yaml

from slimline.cli.common import disk_line
from slimline.tasks import base


def _full(*args: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = tmp_path / "report.html"
    report.write_text("<html>the last good report</html>")
    monkeypatch.setattr(base.os, "fsync", _full)
    with pytest.raises(OSError) as err:
        base.write_text(report, "<html>" + "x" * 100_000)  # as write_reports writes it
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(report)
    assert report.read_text() == "<html>the last good report</html>"  # before: cut at 4 KB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temp file left


def test_the_lines_say_what_to_do() -> None:
    full = disk_line(OSError(errno.ENOSPC, "No space left on device", "/a/manifest.json"))
    assert full is not None and "/a/manifest.json" in full and "slimline gc" in full
    ro = disk_line(OSError(errno.EROFS, "Read-only file system", "/a/spec.json"))
    assert ro is not None and "/a/spec.json" in ro and "artifacts.path" in ro
    assert disk_line(OSError(errno.EACCES, "Permission denied")) is None  # others are not ours


def test_a_run_that_fills_the_disk_exits_1_with_one_line(
    cli, tiny_model, tiny_spec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = base.write_text

    def full_at_spec_json(path: Path, text: str) -> None:
        if Path(path).name == "spec.json":  # the run's own files, after every stage finished
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, text)

    monkeypatch.setattr(base, "write_text", full_at_spec_json)
    data = tiny_spec(tiny_model("bert"), "feature-extraction", tmp_path / "art")
    data["variants"] = {"pruning": ["none"], "quantization": ["none"]}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    ran = cli("run", str(spec), "--executor", "local", "--registry", "none")
    assert ran.returncode == 1, ran.stderr
    lines = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "no space left writing" in lines[0] and "spec.json" in lines[0]
    assert "Traceback" not in ran.stderr
    assert list((tmp_path / "art" / "stages").glob("*.json"))  # the finished stages stay cached
