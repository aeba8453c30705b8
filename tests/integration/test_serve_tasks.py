"""Labels and per-token log-probabilities through a real Ray Serve (127.0.0.1): two applications
in one Serve instance, a tiny classifier and a tiny Llama decoding graph (KV cache), each answer
checked against a plain ONNX Runtime run of the same graph."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from transformers import AutoTokenizer

from slimline.cluster.serve import ServeSource, deploy, serve_instance
from slimline.pipelines.spec.serve import ServeConfig
from slimline.tasks import export
from slimline.tasks.graph import read_meta, with_past

TEXTS = ["The bridge opened in the spring.", "Cold tea.", "Nobody expected the vote to pass so easily."]


@pytest.fixture(scope="module")
def served(tiny_model, tiny_decoder, tmp_path_factory, texts, port_factory) -> Iterator[dict]:
    pytest.importorskip("onnxruntime_genai", reason="the llm extra (onnxruntime-genai) is not installed")
    root = tmp_path_factory.mktemp("served")
    graphs = {"classify": root / "cls", "score": root / "lm"}
    export.apply(export.ExportConfig(), tiny_model("bert", "text-classification"), graphs["classify"],
                 task="text-classification", texts=texts[:8])  # fmt: skip
    export.apply(export.ExportConfig(), tiny_decoder("llama"), graphs["score"], task="causal-lm",
                 texts=texts[:8])  # fmt: skip
    cfg = ServeConfig(port=port_factory(), max_batch_size=8, batch_wait_ms=20)
    with serve_instance(cfg):
        for name, folder in graphs.items():
            deploy(ServeSource(str(folder), variant=f"v-{name}"), cfg, app_name=name, route_prefix=f"/{name}")
        yield {"url": f"http://127.0.0.1:{cfg.port}", "graphs": graphs}


def _run(folder: Path, texts: list[str]) -> tuple[np.ndarray, dict]:
    """The graph's raw output for `texts` as one padded batch, and the feed."""
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    meta = read_meta(folder / "model.onnx")
    enc = tok(texts, return_tensors="np", padding=True, truncation=True, max_length=128)
    feed = {
        n: enc[n].astype(np.int64) if n in enc else np.zeros_like(enc["input_ids"]) for n in meta["inputs"]
    }
    return sess.run(None, with_past(feed, meta))[0].astype(np.float64), feed


def _log_softmax(x: np.ndarray) -> np.ndarray:
    return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))


def test_classify_answers_the_graphs_labels_and_probabilities(served) -> None:
    r = httpx.post(served["url"] + "/classify/classify", json={"texts": TEXTS}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    logits, _ = _run(served["graphs"]["classify"], TEXTS)
    probs = np.exp(_log_softmax(logits))
    np.testing.assert_allclose(body["probabilities"], probs, atol=1e-5)
    labels = read_meta(served["graphs"]["classify"] / "model.onnx")["labels"]
    assert body["labels"] == [labels[i] for i in probs.argmax(1)]
    model = httpx.get(served["url"] + "/classify/model", timeout=30).json()
    assert model["variant"] == "v-classify" and model["task"] == "text-classification"


def test_score_answers_each_tokens_log_probability(served) -> None:
    r = httpx.post(served["url"] + "/score/score", json={"texts": TEXTS}, timeout=60)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    logits, feed = _run(served["graphs"]["score"], TEXTS)
    logp = _log_softmax(logits)
    for i, res in enumerate(results):
        n = int(feed["attention_mask"][i].sum())  # right padding: real tokens come first
        ids = feed["input_ids"][i][:n]
        assert res["token_ids"] == ids.tolist() and len(res["tokens"]) == n
        want = logp[i, np.arange(n - 1), ids[1:]]
        np.testing.assert_allclose(res["logprobs"], want, atol=1e-5)
        assert all(lp <= 0 for lp in res["logprobs"])
    wrong = httpx.post(served["url"] + "/score/embed", json={"texts": TEXTS}, timeout=30)
    assert wrong.status_code == 404 and "use POST /score" in wrong.json()["detail"]


def test_generate_streams_transformers_greedy_tokens_and_batches_concurrent_clients(
    served, tiny_decoder
) -> None:
    """POST /generate on the decoding graph: greedy tokens equal transformers' generate token for
    token, SSE deltas add up to the whole text, concurrent requests answer as alone."""
    import json

    import torch

    from slimline.tasks.load import load_pretrained

    url = served["url"] + "/score/generate"
    tok = AutoTokenizer.from_pretrained(str(served["graphs"]["score"]))
    model = load_pretrained(str(tiny_decoder("llama")), "causal-lm")
    for prompt in TEXTS[:2]:
        r = httpx.post(url, json={"prompt": prompt, "max_new_tokens": 12}, timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        ids = torch.tensor([tok(prompt)["input_ids"]])
        with torch.no_grad():
            want = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                  do_sample=False)[0, ids.shape[1]:].tolist()  # fmt: skip
        assert body["token_ids"] == want[: len(body["token_ids"])] and body["prompt_tokens"] == ids.shape[1]
        assert body["finish_reason"] in ("length", "eos")
        with httpx.stream("POST", url, json={"prompt": prompt, "max_new_tokens": 12, "stream": True}) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            events = [line.removeprefix("data: ") for line in s.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        parsed = [json.loads(e) for e in events[:-1]]
        assert "".join(e.get("text", "") for e in parsed) == body["text"]
        assert parsed[-1]["finish_reason"] == body["finish_reason"]

    async def together() -> list[dict]:
        async with httpx.AsyncClient(timeout=60) as client:
            got = await asyncio.gather(
                *(client.post(url, json={"prompt": p, "max_new_tokens": 10}) for p in TEXTS)
            )
        return [g.json() for g in got]

    alone = [httpx.post(url, json={"prompt": p, "max_new_tokens": 10}, timeout=60).json() for p in TEXTS]
    assert [g["token_ids"] for g in asyncio.run(together())] == [a["token_ids"] for a in alone]
    bad = httpx.post(url, json={"prompt": "x", "max_new_tokens": 0}, timeout=30)
    assert bad.status_code == 422 and "body.max_new_tokens" in bad.json()["detail"]
    nope = httpx.post(served["url"] + "/classify/generate", json={"prompt": "x"}, timeout=30)
    assert nope.status_code == 404
    assert httpx.get(served["url"] + "/score/model", timeout=30).json()["served"]["generate"] is True
