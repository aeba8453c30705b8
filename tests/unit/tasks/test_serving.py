"""The Predictor a serving replica holds, against plain ONNX Runtime runs of the same graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from transformers import AutoTokenizer

from slimline.tasks import export
from slimline.tasks.base import TaskError
from slimline.tasks.graph import read_meta
from slimline.tasks.serving import Predictor

TEXTS = ["Rain again.", "The committee met on Tuesday to discuss the new budget in detail.", "Yes"]


@pytest.fixture(scope="module")
def graphs(tiny_model, tmp_path_factory, texts) -> dict[str, Path]:
    out = {}
    for family, task in (("bert", "feature-extraction"), ("bert", "text-classification")):
        folder = tmp_path_factory.mktemp(f"serve-{task}") / "graph"
        export.apply(export.ExportConfig(), tiny_model(family, task), folder, task=task, texts=texts[:8])
        out[task] = folder
    return out


def _raw(folder: Path, text: str) -> np.ndarray:
    """The graph's output for one text alone (no padding), straight from ONNX Runtime."""
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    enc = AutoTokenizer.from_pretrained(str(folder))([text], return_tensors="np")
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {n: enc[n].astype(np.int64) for n in names})[0][0]


def test_embeddings_are_the_mean_over_real_tokens_whatever_the_batch(graphs) -> None:
    folder = graphs["feature-extraction"]
    got = Predictor(folder).predict(TEXTS, batch_size=3)  # one padded batch
    for text, res in zip(TEXTS, got, strict=True):
        np.testing.assert_allclose(res["embedding"], _raw(folder, text).mean(0), atol=1e-5)


def test_labels_and_probabilities_come_from_the_logits(graphs) -> None:
    folder = graphs["text-classification"]
    pred = Predictor(folder)
    labels = read_meta(folder / "model.onnx")["labels"]
    assert pred.endpoint == "classify" and len(labels) == 2
    for text, res in zip(TEXTS, pred.predict(TEXTS), strict=True):
        logits = _raw(folder, text).astype(np.float64)
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(res["scores"], probs, atol=1e-6)
        assert res["label"] == labels[int(probs.argmax())] and res["score"] == pytest.approx(probs.max())


def test_a_folder_without_a_graph_is_a_task_error(tmp_path) -> None:
    with pytest.raises(TaskError, match=r"model\.onnx"):
        Predictor(tmp_path)


def test_an_empty_text_alone_is_answered(tiny_model, tmp_path, texts) -> None:
    # GPT-2's tokenizer has no BOS: an empty text is zero tokens, which must not become a 500.
    folder = tmp_path / "graph"
    model = tiny_model("gpt2", "causal-lm")
    export.apply(export.ExportConfig(), model, folder, task="causal-lm", texts=texts[:8])
    pred = Predictor(folder)
    assert len(pred.score([""])) == 1 and len(pred.score(["", "Rain again."])) == 2


def test_batches_are_bucketed_by_length_and_answers_keep_the_request_order(graphs) -> None:
    from slimline.tasks.inputs import length_buckets

    folder = graphs["feature-extraction"]
    pred = Predictor(folder)
    mixed = [TEXTS[1], TEXTS[2], TEXTS[0], TEXTS[1], TEXTS[2]]
    lengths = [len(pred.tokenizer(t)["input_ids"]) for t in mixed]
    chunks = list(length_buckets(pred.tokenizer, mixed, 2, pred.max_length, pred.meta["inputs"]))
    assert sorted(i for where, _ in chunks for i in where) == list(range(len(mixed)))
    for where, feed in chunks:  # each chunk is padded to its own longest text, not the request's
        assert feed["input_ids"].shape[1] == max(lengths[i] for i in where)
        np.testing.assert_array_equal(feed["attention_mask"].sum(1), [lengths[i] for i in where])
    assert chunks[0][1]["input_ids"].shape[1] < max(lengths)  # the short texts share a short batch
    for text, res in zip(mixed, pred.predict(mixed, batch_size=2), strict=True):
        np.testing.assert_allclose(res["embedding"], _raw(folder, text).mean(0), atol=1e-5)
    assert pred.predict([], batch_size=2) == []
