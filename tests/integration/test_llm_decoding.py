"""Decoding graphs of causal LMs: ONNX Runtime GenAI's builder, the KV cache, LLM metrics and timing.

Real builder runs and real ONNX Runtime sessions on tiny grouped-query decoders (Llama and Qwen2,
4 query heads over 2 KV heads, head size 16).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from slimline.tasks import decode, evaluate, export, load, metrics
from slimline.tasks.base import TaskError
from slimline.tasks.catalog import make_config
from slimline.tasks.graph import read_meta, with_past
from slimline.tasks.runtime import session
from slimline.tasks.stages import prune, quantize

pytest.importorskip("onnxruntime_genai", reason="the llm extra (onnxruntime-genai) is not installed")

PROMPTS = ["The history of the city begins", "Water boils at a temperature", "In the morning the market"]


def _export(model_dir: Path, out: Path, texts: list[str]) -> dict:
    return export.apply(export.ExportConfig(), model_dir, out, task="causal-lm", texts=texts[:64])


@pytest.fixture(scope="module")
def llama_graph(tiny_decoder, tmp_path_factory, texts) -> tuple[Path, dict]:
    model_dir = tiny_decoder("llama")
    out = tmp_path_factory.mktemp("llama-graph") / "g"
    return out / "model.onnx", _export(model_dir, out, texts)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_kv_cache_export_generates_torchs_greedy_tokens(family, tiny_decoder, tmp_path, texts) -> None:
    model_dir = tiny_decoder(family)
    rec = _export(model_dir, tmp_path / "g", texts)
    assert rec["exporter"] == "genai" and rec["kv_cache"] is True
    assert rec["greedy_parity"]["all_equal"] and rec["greedy_parity"]["tokens"] == 16
    graph = tmp_path / "g" / "model.onnx"
    meta = read_meta(graph)
    names = {i.name for i in session(graph).get_inputs()}
    assert {"past_key_values.0.key", "past_key_values.1.value"} <= names  # the cache is a graph input
    assert meta["kv_cache"] == {"layers": 2, "kv_heads": 2, "head_dim": 16}
    # Prompts the export's own check did not see, 16 tokens each, decoded step by step with the cache.
    tok = load.load_tokenizer(str(model_dir))
    model = load.load_pretrained(str(model_dir), "causal-lm")
    ids = decode.prompt_ids(tok, PROMPTS, 3, 6)
    got = decode.OrtDecoder(session(graph), meta).greedy(ids, 16)
    np.testing.assert_array_equal(got, decode.torch_greedy(model, ids, 16))


def test_cached_decoding_equals_recomputing_the_prefix(llama_graph) -> None:
    """Logits of the last step with the cache equal those of one pass over the whole sequence."""
    graph, _ = llama_graph
    meta = read_meta(graph)
    sess = session(graph)
    dec = decode.OrtDecoder(sess, meta)
    ids = np.arange(2000, 2012, dtype=np.int64).reshape(1, 12)
    _, cache, _ = dec.prefill(ids[:, :11])
    feed = {"input_ids": ids[:, 11:], "attention_mask": np.ones((1, 12), np.int64), **cache}
    step = sess.run(["logits"], feed)[0][0, -1]
    full_feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    full = sess.run(["logits"], with_past(full_feed, meta))[0][0, -1]
    np.testing.assert_allclose(step, full, atol=1e-4)


def test_llm_metrics_are_exact_for_the_same_graph_and_move_for_int4(llama_graph, tmp_path, texts) -> None:
    graph, _ = llama_graph
    base = evaluate.onnx_outputs(graph, texts[:16], batch_size=4, max_length=32)
    same = evaluate.onnx_outputs(graph, texts[:16], batch_size=4, max_length=32, probe=base.top_ids)
    agree = metrics.agreement(base, same)
    assert agree["top1_agreement"] == 1.0 and agree["kl_divergence"] == pytest.approx(0.0, abs=1e-6)
    int4 = make_config({"method": "int4-weight-only", "block_size": 32}, "quantize")
    qrec = quantize.apply(int4, graph, tmp_path / "q")
    fp32 = onnx.load(str(graph), load_external_data=False).graph
    weights = {i.name for i in fp32.initializer}
    weight_matmuls = [n for n in fp32.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert len(weight_matmuls) >= 2 * 4 + 1  # (packed) projections of both layers, and the LM head
    assert qrec["ops"].get("MatMulNBits", 0) == len(weight_matmuls)
    qgraph = tmp_path / "q" / "model.onnx"
    got = evaluate.onnx_outputs(qgraph, texts[:16], batch_size=4, max_length=32, probe=base.top_ids)
    moved = metrics.agreement(base, got)
    assert moved["kl_divergence"] > 1e-4 and moved["top1_agreement"] < 1.0
    ids = decode.prompt_ids(load.load_tokenizer(str(graph.parent)), texts, 4, 8)
    ref = decode.OrtDecoder(session(graph), read_meta(graph)).greedy(ids, 32)
    assert decode.generation_agreement(ref, ref) == 1.0
    q = decode.OrtDecoder(session(qgraph), read_meta(qgraph)).greedy(ids, 32)
    assert decode.generation_agreement(ref, q) == pytest.approx(float((ref == q).mean()))
    assert decode.generation_agreement(ref, q) < 1.0  # random tiny weights: int4 changes some tokens


def test_decode_latency_side_by_side_with_cis(llama_graph, texts) -> None:
    graph, _ = llama_graph
    cfg = evaluate.LatencyConfig(
        batch_size=1, sequence_length=16, warmup=1, repeats=3, decode_tokens=8, decode_batches=(1, 4)
    )
    res = evaluate.onnx_latency_many({"a": graph, "b": graph}, cfg, texts)
    for rec in res.values():
        for name in ("decode_tokens_per_s", "decode_tokens_per_s_b4"):
            low, high = rec[f"{name}_ci"]
            assert 0 < low <= rec[name] <= high
        assert rec["prefill_ms"] == rec["latency_p50_ms"]


def test_depth_pruned_decoder_exports_with_fewer_layers(tiny_decoder, tmp_path, texts) -> None:
    model_dir = tiny_decoder("llama", layers=3)
    cfg = make_config({"method": "layers", "drop": [1]}, "prune")
    prune.apply(cfg, model_dir, tmp_path / "p", task="causal-lm", calibration=texts[:8])
    rec = _export(tmp_path / "p", tmp_path / "g", texts)
    assert rec["greedy_parity"]["all_equal"]
    meta = read_meta(tmp_path / "g" / "model.onnx")
    assert meta["kv_cache"]["layers"] == 2 == meta["num_layers"]
    names = {i.name for i in session(tmp_path / "g" / "model.onnx").get_inputs()}
    assert "past_key_values.1.key" in names and "past_key_values.2.key" not in names


def test_auto_falls_back_to_a_forward_graph_and_says_why(tiny_model, tmp_path, texts) -> None:
    """Head size 8 has no CPU GroupQueryAttention kernel: `auto` exports the single forward graph."""
    rec = _export(tiny_model("llama"), tmp_path / "g", texts)
    assert rec["exporter"] in ("dynamo", "legacy") and rec["kv_cache"] is False
    assert "multiple of 16" in rec["exporter_errors"]["genai"]
    with pytest.raises(TaskError, match="multiple of 16"):
        export.apply(
            export.ExportConfig(exporter="genai"),
            tiny_model("llama"),
            tmp_path / "h",
            task="causal-lm",
            texts=texts,
        )


def test_llm_sweep_through_the_cli_registers_a_decoding_champion(tiny_decoder, tiny_spec, slimline, tmp_path):
    """`slimline run` on Ray: depth pruning + KD, int4 and int8 weight-only, decode metrics, a champion."""
    import json

    import mlflow
    import yaml

    spec = tiny_spec(tiny_decoder("llama", layers=3), "causal-lm", tmp_path / "a")
    spec["variants"] = {
        "pruning": ["none", {"method": "layers", "drop": [1]}],
        "quantization": ["none", {"method": "int4-weight-only"}, {"method": "int8-weight-only"}],
        "distillation": {"enabled": True, "steps": 4, "batch_size": 4},
    }
    spec["data"]["train"] = {"builtin": "python-docs", "samples": 32}
    spec["evaluate"]["latency"] |= {"decode_tokens": 4, "decode_batches": [1, 2], "decode_repeats": 3}
    spec["select"] = {"constraints": {"top1_agreement": {"min": 0.0}}, "objectives": ["decode_tokens_per_s"]}
    spec["registry"] = {"model_name": "tiny-llm"}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    res = slimline("run", str(tmp_path / "spec.yaml"), "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads(res.stdout)
    rows = {v["label"]: v for v in manifest["variants"]}
    assert len(rows) == 6 and all(v["status"] == "succeeded" for v in rows.values()), rows
    for row in rows.values():
        m = row["metrics"]
        assert 0 <= m["generation_agreement"] <= 1 and m["decode_tokens_per_s"] > 0
        assert m["decode_tokens_per_s_ci"][0] <= m["decode_tokens_per_s"] <= m["decode_tokens_per_s_ci"][1]
        assert m["prefill_ms"] == m["latency_p50_ms"]
    base = rows["none × none"]["metrics"]
    assert base["generation_agreement"] == 1.0 and base["top1_agreement"] == 1.0
    pruned = rows["layers(drop=[1]) +kd × none"]
    assert pruned["distillation"]["steps"] == 4 and pruned["metrics"]["generation_agreement"] < 1.0
    store = os.environ["MLFLOW_TRACKING_URI"]  # this test's own store (conftest), never a global
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    champion = client.get_model_version_by_alias("tiny-llm", "champion")
    assert champion.tags["slimline.variant_id"] == manifest["selected"][0]
