"""Dynamic int8 of classifiers of any width and label count (a transposed head once broke shape inference)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import transformers as tf

from slimline.tasks import evaluate, export, metrics, optimize
from slimline.tasks.export import ExportConfig
from slimline.tasks.quantization.dynamic_int8 import DynamicInt8Config
from slimline.tasks.stages import quantize

WIDTHS, LABELS = (32, 64, 384), (2, 3, 7)
ALL = list(itertools.product(WIDTHS, LABELS))
QUICK = [(64, 3)]  # the width and label count that first failed; the rest run in `make test`


def _classifier(tmp_path: Path, minilm_path: Path, dim: int, labels: int) -> Path:
    torch.manual_seed(0)
    config = tf.DistilBertConfig(
        vocab_size=30522, dim=dim, n_layers=1, n_heads=4, hidden_dim=2 * dim, num_labels=labels
    )
    model = tf.AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    model.save_pretrained(tmp_path / "m")
    tf.AutoTokenizer.from_pretrained(str(minilm_path)).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def _check(tmp_path: Path, minilm_path: Path, texts: list[str], dim: int, labels: int) -> None:
    src = _classifier(tmp_path, minilm_path, dim, labels)
    e = export.apply(ExportConfig(), src, tmp_path / "onnx", task="text-classification", texts=texts)
    o = optimize.apply(optimize.OptimizeConfig(), Path(e["path"]), tmp_path / "opt", texts=texts)
    rec = quantize.apply(DynamicInt8Config(), Path(o["path"]), tmp_path / "q")
    assert rec["ops"].get("DynamicQuantizeLinear", 0) > 0
    got = evaluate.onnx_outputs(Path(rec["path"]), texts[:16], max_length=32)
    assert got.values.shape == (16, labels)
    base = evaluate.onnx_outputs(Path(o["path"]), texts[:16], max_length=32)
    assert metrics.fidelity(base, got) >= 0.5  # top-1 agreement of the int8 head with fp32


@pytest.mark.parametrize(("dim", "labels"), QUICK)
def test_dynamic_int8_classifier_heads(tmp_path, minilm_path, texts, dim: int, labels: int) -> None:
    _check(tmp_path, minilm_path, texts, dim, labels)


@pytest.mark.slow
@pytest.mark.parametrize(("dim", "labels"), [c for c in ALL if c not in QUICK])
def test_dynamic_int8_classifier_heads_every_width(
    tmp_path, minilm_path, texts, dim: int, labels: int
) -> None:
    _check(tmp_path, minilm_path, texts, dim, labels)
