"""Decoding-ready export of causal LMs with ONNX Runtime GenAI's model builder.

The builder (`onnxruntime_genai.models.builder`, in the `llm` extra) writes one graph that both
prefills and decodes: past keys/values of every layer in, presents out, GroupQueryAttention with
rotary embeddings fused, and a genai_config.json, so the folder also runs under the GenAI
runtime. slimline asks it for fp32; quantization techniques then work on that graph like on any
other (int4 MatMulNBits, dynamic int8). Parity with torch is checked twice: logits of whole
sequences, and greedy tokens generated with the cache.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from slimline.tasks.base import Record, TaskError
from slimline.tasks.decode import OrtDecoder, prompt_ids, torch_greedy
from slimline.tasks.families import detect, layers_of
from slimline.tasks.runtime import session

BUILDER = "onnxruntime_genai.models.builder"


def head_dim_of(model: nn.Module) -> int:
    cfg = model.config
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def unsupported(model: nn.Module, task: str) -> str | None:
    """Why the builder cannot give this model a decoding graph, or None when it can."""
    if task != "causal-lm":
        return "only causal LMs decode"
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return "onnxruntime-genai is not installed (pip install 'slimline[llm]')"
    try:
        family = detect(model).name
    except TaskError as exc:
        return str(exc)
    if family != "llama":
        return f"the builder path covers Llama-like decoders (Llama, Mistral, Qwen2); this is {family}"
    if head_dim_of(model) % 16:
        # ONNX Runtime's CPU GroupQueryAttention kernel refuses other sizes at run time.
        return f"head size {head_dim_of(model)} is not a multiple of 16 (GroupQueryAttention needs it)"
    return None


def build(model_dir: Path, out: Path, device: str = "cpu") -> None:
    """Run the builder on a saved fp32 model folder, writing model.onnx (+ .data) into `out`."""
    cache = out / "_builder_cache"
    cmd = [sys.executable, "-m", BUILDER, "-i", str(model_dir), "-o", str(out), "-p", "fp32"]
    cmd += ["-e", "cuda" if device == "cuda" else "cpu", "-c", str(cache)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0 or not (out / "model.onnx").is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TaskError(f"ONNX Runtime GenAI builder failed (exit {proc.returncode}): {tail[0][:300]}")


def kv_meta(model: nn.Module) -> Record:
    """What decoding needs to build an empty cache: layers, KV heads and head size."""
    cfg = model.config
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    return {
        "layers": len(layers_of(model, detect(model))),
        "kv_heads": kv_heads,
        "head_dim": head_dim_of(model),
    }


def greedy_parity(
    onnx_path: Path, meta: Record, model: nn.Module, tokenizer: Any, texts: list[str], tokens: int
) -> Record:
    """Greedy tokens of the graph (decoding with its cache) against torch's, on three real prompts."""
    ids = prompt_ids(tokenizer, texts, 3, 8)
    got = OrtDecoder(session(onnx_path), meta).greedy(ids, tokens)
    want = torch_greedy(model, ids, tokens)
    rows_equal = [bool(np.array_equal(g, w)) for g, w in zip(got, want, strict=True)]
    return {"prompts": len(ids), "tokens": tokens, "rows_equal": rows_equal, "all_equal": all(rows_equal)}
