"""Where the attention and FFN projections live in each supported transformer family.

Families are detected by module structure, not by `model_type`, so encoders "built the same way"
as BERT (RoBERTa, XLM-R, ELECTRA, MiniLM...) work without being listed one by one.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from slimline.tasks.base import UnsupportedArchitecture


@dataclass(frozen=True)
class Family:
    """Attribute paths of one family's blocks, relative to `model.base_model`."""

    name: str
    layers: str
    q: str
    k: str
    v: str
    o: str
    ffn_in: tuple[str, ...]  # projections into the FFN channels (up, and gate for gated MLPs)
    ffn_out: str
    heads_attr: str  # config attribute holding the number of attention heads
    ffn_attr: str  # config attribute holding the FFN width
    kv_heads_attr: str | None = None  # grouped-query attention
    fused_qkv: bool = False  # GPT-2 keeps q, k and v in one Conv1D (q == k == v path)
    # transformers 5 derives head size from hidden_size / num_heads for these families, so a
    # smaller head count cannot be written into the config; see tasks/load.py.
    head_dim_in_config: bool = False


# name, layers, q, k, v, o, ffn_in, ffn_out, heads_attr, ffn_attr (then the optional fields)
FAMILIES: tuple[Family, ...] = (
    Family("bert", "encoder.layer", "attention.self.query", "attention.self.key", "attention.self.value",
           "attention.output.dense", ("intermediate.dense",), "output.dense", "num_attention_heads",
           "intermediate_size"),
    Family("distilbert", "transformer.layer", "attention.q_lin", "attention.k_lin", "attention.v_lin",
           "attention.out_lin", ("ffn.lin1",), "ffn.lin2", "n_heads", "hidden_dim"),
    Family("gpt2", "h", "attn.c_attn", "attn.c_attn", "attn.c_attn", "attn.c_proj", ("mlp.c_fc",),
           "mlp.c_proj", "n_head", "n_inner", fused_qkv=True),
    Family("llama", "layers", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           ("mlp.up_proj", "mlp.gate_proj"), "mlp.down_proj", "num_attention_heads", "intermediate_size",
           kv_heads_attr="num_key_value_heads", head_dim_in_config=True),
)  # fmt: skip

SUPPORTED = (
    "BERT-like encoders (BERT, RoBERTa, MiniLM, ELECTRA, ...), DistilBERT, GPT-2, "
    "Llama-like (Llama, Mistral, Qwen)"
)


def get_path(root: nn.Module, path: str) -> nn.Module:
    """Follow a dotted attribute path ("attention.self.query")."""
    obj = root
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _has(root: nn.Module, path: str) -> bool:
    try:
        get_path(root, path)
    except (AttributeError, IndexError, TypeError):
        return False
    return True


def detect(model: nn.Module) -> Family:
    """Return the family whose layout `model` has, or raise UnsupportedArchitecture."""
    base = getattr(model, "base_model", model)
    for fam in FAMILIES:
        if not _has(base, fam.layers):
            continue
        layers = get_path(base, fam.layers)
        if len(layers) and all(
            _has(layers[0], p) for p in (fam.q, fam.k, fam.v, fam.o, fam.ffn_out, *fam.ffn_in)
        ):
            return fam
    kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    raise UnsupportedArchitecture(f"architecture {kind!r} is not supported; supported families: {SUPPORTED}")


def layers_of(model: nn.Module, fam: Family) -> nn.ModuleList:
    """The list of transformer blocks."""
    return get_path(getattr(model, "base_model", model), fam.layers)  # type: ignore[return-value]


def block_linears(model: nn.Module, fam: Family) -> list[tuple[str, nn.Module]]:
    """Every weight matrix inside the transformer blocks (Linear or GPT-2 Conv1D), with its name."""
    out: list[tuple[str, nn.Module]] = []
    for i, layer in enumerate(layers_of(model, fam)):
        for name, mod in layer.named_modules():
            if isinstance(mod, nn.Linear) or type(mod).__name__ == "Conv1D":
                out.append((f"{fam.layers}.{i}.{name}", mod))
    return out


def num_heads(model: nn.Module, fam: Family) -> int:
    """Heads per layer in the original configuration."""
    return int(getattr(model.config, fam.heads_attr))
