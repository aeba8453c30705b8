"""State a crash or a second writer could damage: records, schedule state, stage outputs."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path

from slimline.pipelines.run.stage import Context, cached, record_path
from slimline.pipelines.schedule.schedule import Scheduler
from slimline.tasks.base import atomic_dir, write_json


def test_two_writers_of_one_json_file_never_collide(tmp_path: Path) -> None:
    path, errors = tmp_path / "state.json", []

    def writer(n: int) -> None:
        try:
            for i in range(200):
                write_json(path, {"writer": n, "i": i})
        except Exception as exc:  # a shared temp name makes one writer rename the other's file
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and json.loads(path.read_text())["i"] == 199
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


def test_a_finished_output_is_never_removed_under_a_reader(tmp_path: Path) -> None:
    final = tmp_path / "stage"
    with atomic_dir(final) as d:
        (d / "model.onnx").write_text("first")
    reader = (final / "model.onnx").open()
    with atomic_dir(final) as d:  # a second writer of the same content-addressed stage
        (d / "model.onnx").write_text("second")
    assert reader.read() == "first" and (final / "model.onnx").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]


def test_a_corrupt_stage_record_is_recomputed_not_fatal(tmp_path: Path, caplog) -> None:
    ctx = Context(root=str(tmp_path), task="feature-extraction", eval_texts=[], calibration=[])
    rec = {"path": str(tmp_path), "status": "succeeded"}
    write_json(record_path(ctx, "s1"), rec)
    assert cached(ctx, "s1") == rec
    record_path(ctx, "s1").write_text('{"path": "x", "trunc')  # a crash mid-write of an old version
    with caplog.at_level(logging.WARNING):
        assert cached(ctx, "s1") is None
    assert "stage record" in caplog.text and "treating it as absent" in caplog.text


def test_state_files_of_the_wrong_shape_are_recomputed(tmp_path: Path, caplog) -> None:
    """Valid JSON that is not what the file holds (issue 25) is treated like a cut-off file."""
    from slimline.tasks.digest import folder_digest

    ctx = Context(root=str(tmp_path), task="feature-extraction", eval_texts=[], calibration=[])
    with caplog.at_level(logging.WARNING):
        for data in ([], {}, "x", {"status": 1}, {"status": "succeeded", "_files": [1, 2]}):
            write_json(record_path(ctx, "s1"), data)
            assert cached(ctx, "s1") is None, data
    assert "not a stage record" in caplog.text and "inventory is not a JSON object" in caplog.text
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    cache = tmp_path / "digests.json"
    for data in ([1, 2], {"w.bin": 3}, "text"):
        write_json(cache, data)
        assert folder_digest(model, cache) == folder_digest(model)  # the cache ignored, not fatal


def test_a_corrupt_schedule_state_reruns_the_tick(tmp_path: Path, caplog) -> None:
    ran: list[str] = []
    at = dt.datetime(2026, 11, 23, 3, 0, 10, tzinfo=dt.UTC)
    sched = Scheduler("0123456789abcdef", "0 3 * * *", "skip", lambda t: ran.append(t.id) or 0, tmp_path)
    sched.clock = lambda: at
    assert [code for _, code in sched.step()] == [0]
    sched.state_path.write_bytes(b"\x00\xff not json")
    with caplog.at_level(logging.WARNING):
        assert [code for _, code in sched.step()] == [0]  # the same tick id: a no-op downstream
    assert len(ran) == 2 and ran[0] == ran[1] and "schedule state" in caplog.text
    assert json.loads(sched.state_path.read_text())["done"] == [ran[0]]
