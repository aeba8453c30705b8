"""The model's own output contract (tasks.pipeline): read once at load, used by evaluation and serving.

The reference is sentence-transformers itself: a folder saved with its modules, then encoded by
`SentenceTransformer(folder).encode`, must give what slimline's fp32 graph and Predictor give.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from transformers import AutoConfig

from slimline.tasks import evaluate, export, load, metrics
from slimline.tasks.graph import META_NAME, ONNX_NAME, read_meta, write_meta
from slimline.tasks.pipeline import META_KEY, pool, read_pipeline
from slimline.tasks.serving import Predictor
from slimline.tasks.stages import evaluate as evaluate_stage
from slimline.tasks.stages import reference as reference_stage
from slimline.tasks.stages.base import Context, StageCall

LONG = " ".join(f"word{i}" for i in range(200))  # far beyond the tiny models' 64 positions
TEXTS = ["Rain again.", "The committee met on Tuesday to discuss the new budget in detail.", "Yes", LONG]
MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")


def _st_modules():
    try:  # sentence-transformers >= 6
        from sentence_transformers.base.modules import Normalize, Transformer
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:
        from sentence_transformers.models import Normalize, Pooling, Transformer
    return Transformer, Pooling, Normalize


def st_folder(model: Path, out: Path, mode: str, normalize: bool) -> Path:
    """`model` saved as a sentence-transformers folder with the given pooling (and Normalize)."""
    from sentence_transformers import SentenceTransformer

    transformer, pooling, normalizer = _st_modules()
    tr = transformer(str(model))
    dim = AutoConfig.from_pretrained(str(model)).hidden_size
    mods = [tr, pooling(dim, pooling_mode=mode)] + ([normalizer()] if normalize else [])
    SentenceTransformer(modules=mods, device="cpu").save(str(out))
    return out


def st_encode(folder: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)


def assert_same_embeddings(got: np.ndarray, want: np.ndarray) -> None:
    """The issue's contract: cosine ≥ 0.9999 per text and norms within 1e-4."""
    assert got.shape == want.shape
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.9999, cos
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(want, axis=1), atol=1e-4)


def test_pooling_matches_sentence_transformers_for_every_mode_and_padding_side() -> None:
    _, pooling, _ = _st_modules()
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 6, 4, generator=gen)
    right = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    for mask in (right, right.flip(1)):  # padding on the right, then on the left
        for mode in MODES:
            want = pooling(4, pooling_mode=mode)({"token_embeddings": hidden, "attention_mask": mask})
            got = pool(hidden.numpy(), mask.numpy(), (mode,), normalize=False)
            np.testing.assert_allclose(got, want["sentence_embedding"].numpy(), atol=1e-5, err_msg=mode)
    both = pool(hidden.numpy(), right.numpy(), ("cls", "mean"), normalize=True)
    assert both.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-12)


def test_the_packaged_minilm_declares_mean_pooling_normalize_and_256_tokens(minilm_path) -> None:
    pipe = read_pipeline(minilm_path, "feature-extraction", AutoConfig.from_pretrained(str(minilm_path)))
    assert pipe.source == "sentence-transformers"
    assert (pipe.pooling, pipe.normalize, pipe.max_length) == (("mean",), True, 256)
    assert json.loads(json.dumps(pipe.to_json())) == pipe.to_json()


def test_a_plain_encoder_keeps_mean_pooling_capped_at_its_position_embeddings(tiny_model) -> None:
    folder = tiny_model("bert")
    pipe = read_pipeline(folder, "feature-extraction", AutoConfig.from_pretrained(str(folder)))
    # the MiniLM tokenizer says 512; the tiny model's position embeddings take 64
    assert (pipe.source, pipe.pooling, pipe.normalize, pipe.max_length) == (
        "transformers",
        ("mean",),
        False,
        64,
    )
    roberta = AutoConfig.for_model("roberta", max_position_embeddings=514, pad_token_id=1)
    assert read_pipeline(folder, "feature-extraction", roberta).max_length == 512  # positions start at 2


@pytest.fixture(scope="module")
def cls_model(tiny_model, tmp_path_factory, texts) -> dict[str, Path]:
    """A CLS-pooled, normalized tiny sentence-transformers model, through load and export as a run does."""
    root = tmp_path_factory.mktemp("st-cls")
    st = st_folder(tiny_model("bert"), root / "st", "cls", normalize=True)
    load.apply(load.LoadConfig(source=str(st)), root / "load")
    rec = export.apply(
        export.ExportConfig(), root / "load", root / "graph", task="feature-extraction", texts=texts[:8]
    )
    return {"st": st, "load": root / "load", "graph": root / "graph", "onnx": Path(rec["path"])}


def test_cls_and_normalize_are_carried_from_load_to_the_graph_and_served_as_encode_gives(cls_model) -> None:
    assert "modules.json" not in {p.name for p in cls_model["load"].iterdir()}  # carried in its config
    meta = read_meta(cls_model["onnx"])
    assert meta[META_KEY]["pooling"] == ["cls"] and meta[META_KEY]["normalize"] is True
    pred = Predictor(cls_model["graph"])
    assert_same_embeddings(pred.embed(TEXTS, batch_size=2), st_encode(cls_model["st"], TEXTS))
    assert pred.describe()["pipeline"] == {
        "source": "sentence-transformers",
        "max_length": 64,
        "pooling": ["cls"],
        "normalize": True,
    }


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_other_poolings_without_normalize_are_served_as_encode_gives(
    cls_model, tiny_model, tmp_path, mode
) -> None:
    st = st_folder(tiny_model("bert"), tmp_path / "st", mode, normalize=False)
    graph = tmp_path / "graph"
    shutil.copytree(cls_model["graph"], graph)  # the same weights: only the pipeline differs
    meta = read_meta(graph / ONNX_NAME)
    meta[META_KEY] = read_pipeline(st, "feature-extraction", AutoConfig.from_pretrained(str(st))).to_json()
    write_meta(graph, meta)
    assert_same_embeddings(Predictor(graph).embed(TEXTS), st_encode(st, TEXTS))


def test_a_text_longer_than_the_position_embeddings_is_truncated_not_an_error(cls_model) -> None:
    pred = Predictor(cls_model["graph"], max_length=512)  # more than the model takes: capped
    assert pred.max_length == 64
    assert len(LONG.split()) > 63 and pred.embed([LONG]).shape == (1, 32)
    old = cls_model["graph"].parent / "old-graph"  # a folder from before pipelines: mean, at 128
    shutil.copytree(cls_model["graph"], old)
    meta = json.loads((old / META_NAME).read_text())
    del meta[META_KEY]
    write_meta(old, meta)
    assert Predictor(old).describe()["pipeline"]["pooling"] == ["mean"]


def _shift_non_cls_tokens(src: Path, dst: Path) -> None:
    """A copy of the graph whose token vectors at positions 1.. are shifted by 0.5 (position 0 kept)."""
    shutil.copytree(src.parent, dst)
    model = onnx.load(str(dst / ONNX_NAME))
    g = model.graph
    out = g.output[0].name
    g.output[0].name = "shifted"
    g.initializer.extend(
        [
            helper.make_tensor("zero", TensorProto.INT64, [], [0]),
            helper.make_tensor("one", TensorProto.INT64, [], [1]),
            helper.make_tensor("shift", TensorProto.FLOAT, [], [0.5]),
        ]
    )
    g.initializer.append(helper.make_tensor("axes", TensorProto.INT64, [2], [0, 2]))
    g.node.extend(
        [
            helper.make_node("Shape", [out], ["shape"], start=1, end=2),
            helper.make_node("Squeeze", ["shape"], ["seq"]),
            helper.make_node("Range", ["zero", "seq", "one"], ["pos"]),
            helper.make_node("Greater", ["pos", "zero"], ["later"]),
            helper.make_node("Cast", ["later"], ["laterf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["laterf", "shift"], ["delta"]),
            helper.make_node("Unsqueeze", ["delta", "axes"], ["delta3"]),
            helper.make_node("Add", [out, "delta3"], ["shifted"]),
        ]
    )
    onnx.save(model, str(dst / ONNX_NAME))


def test_reference_and_evaluate_judge_the_cls_embedding_the_model_declares(
    cls_model, tmp_path, texts
) -> None:
    ctx = Context(str(tmp_path), "feature-extraction", [*texts[:16], LONG], [], max_length=128)
    ref = reference_stage.run(
        StageCall(
            {"kind": "reference", "config": None, "needs": ["load"]},
            {"path": str(cls_model["onnx"])},
            {"load": {"path": str(cls_model["load"])}},
            tmp_path / "ref",
            ctx,
        )
    )
    assert ref["pipeline"]["pooling"] == ["cls"] and ref["onnx_vs_torch_fidelity"] >= 0.9999
    shifted = tmp_path / "shifted"
    _shift_non_cls_tokens(cls_model["onnx"], shifted)

    def fidelity(graph: Path) -> float:
        call = StageCall(
            {"kind": "evaluate", "config": None, "needs": ["ref"]},
            {"path": str(graph)},
            {"ref": ref},
            tmp_path / "ev",
            ctx,
        )
        return evaluate_stage.run(call)["metrics"]["fidelity"]

    assert fidelity(cls_model["onnx"]) == pytest.approx(1.0, abs=1e-9)
    assert fidelity(shifted / ONNX_NAME) == pytest.approx(1.0, abs=1e-9)  # only non-CLS tokens moved
    # Under mean pooling the same shift shows: the CLS pipeline is what makes it irrelevant.
    means = []
    for folder in (cls_model["graph"], shifted):
        copy = tmp_path / f"mean-{folder.name}"
        shutil.copytree(folder, copy)
        meta = read_meta(copy / ONNX_NAME)
        write_meta(copy, {**meta, META_KEY: {**meta[META_KEY], "pooling": ["mean"]}})
        means.append(evaluate.onnx_outputs(copy / ONNX_NAME, ctx.eval_texts))
    assert metrics.fidelity(*means) < 0.999


@pytest.fixture(scope="module")
def multi_label(tiny_model, tmp_path_factory, texts) -> Path:
    src = tmp_path_factory.mktemp("multi") / "model"
    shutil.copytree(tiny_model("bert", "text-classification"), src)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "problem_type": "multi_label_classification"}))
    out = src.parent / "graph"
    export.apply(export.ExportConfig(), src, out, task="text-classification", texts=texts[:8])
    return out


def test_a_multi_label_classifier_returns_sigmoid_scores(multi_label) -> None:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    pred = Predictor(multi_label)
    assert pred.describe()["pipeline"]["scores"] == "sigmoid"
    sess = ort.InferenceSession(str(multi_label / ONNX_NAME), providers=["CPUExecutionProvider"])
    tok = AutoTokenizer.from_pretrained(str(multi_label))
    for text, res in zip(TEXTS, pred.classify(TEXTS), strict=True):
        enc = tok([text], truncation=True, max_length=64, return_tensors="np")
        feed = {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()}
        logits = sess.run(None, feed)[0][0].astype(np.float64)
        np.testing.assert_allclose(res["scores"], 1 / (1 + np.exp(-logits)), atol=1e-6)
        assert res["score"] == pytest.approx(max(res["scores"]))


def test_multi_label_fidelity_counts_agreeing_decisions() -> None:
    a = metrics.Outputs(
        "text-classification", np.array([[2.0, -1.0, 0.5], [1.0, 1.0, -3.0]]), multi_label=True
    )
    b = metrics.Outputs(
        "text-classification", np.array([[1.0, 1.0, 0.5], [-1.0, 2.0, -1.0]]), multi_label=True
    )
    # decisions (logit > 0): row 0 (T,F,T) vs (T,T,T), row 1 (T,T,F) vs (F,T,F): 4 of 6 agree
    assert metrics.fidelity(a, b) == pytest.approx(4 / 6)


def test_data_max_length_defaults_to_the_model_maximum_and_is_capped_at_it(
    tiny_model, tmp_path, caplog
) -> None:
    from slimline.pipelines.run.data import resolve_max_length
    from slimline.pipelines.spec.spec import Spec

    def spec(n: int | None) -> Spec:
        data = {"eval": {"builtin": "corpus", "samples": 8}} | ({"max_length": n} if n else {})
        model = {"source": str(tiny_model("bert")), "task": "feature-extraction"}
        return Spec.model_validate(
            {"version": 1, "name": "t", "model": model, "data": data, "artifacts": str(tmp_path)}
        )

    assert resolve_max_length(spec(None)).data.max_length == 64
    assert resolve_max_length(spec(32)).data.max_length == 32
    with caplog.at_level(logging.WARNING):
        assert resolve_max_length(spec(512)).data.max_length == 64
    assert "capped at 64" in caplog.text
