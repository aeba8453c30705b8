"""What the reference and evaluate stages share: a graph's outputs on the eval set, the task's own
metrics on them, and greedy generation from the fixed prompts of decoding graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slimline.tasks import decode, evaluate, metrics
from slimline.tasks import graph as graph_io
from slimline.tasks.stages.base import Context


def outputs(path: Path, ctx: Context, probe: np.ndarray | None = None) -> metrics.Outputs:
    """The graph's outputs on the eval texts (`probe`: the reference's top-k token ids, causal-lm)."""
    return evaluate.onnx_outputs(
        path,
        ctx.eval_texts,
        batch_size=ctx.eval_batch,
        max_length=ctx.max_length,
        threads=ctx.threads,
        device=ctx.device,
        probe=probe,
    )


def task_metrics(out: metrics.Outputs, ctx: Context) -> dict[str, float]:
    """Metrics against the eval data's own labels: the baseline's are what variants' deltas use."""
    got: dict[str, float] = {}
    if ctx.labels is not None and ctx.task == "text-classification":
        got["accuracy"] = metrics.accuracy(out, ctx.labels)
    if ctx.pairs and ctx.task == "feature-extraction":
        got["sts_spearman"] = metrics.sts_spearman(out, ctx.pairs)
    if ctx.task == "causal-lm" and (ppl := metrics.perplexity(out)) is not None:
        got["perplexity"] = ppl
    return got


def gen_prompts(graph: Path, ctx: Context) -> np.ndarray:
    """The fixed prompts of the generation-agreement metric: the first tokens of eval texts."""
    tok = graph_io.tokenizer_of(graph)
    return decode.prompt_ids(tok, ctx.eval_texts, decode.GEN_PROMPTS, decode.GEN_PROMPT_TOKENS)


def generate(graph: Path, ctx: Context) -> np.ndarray:
    """Greedy tokens of a decoding graph, with its KV cache, from the fixed prompts."""
    from slimline.tasks.runtime import session

    sess = session(graph, device=ctx.device, threads=ctx.threads)
    decoder = decode.OrtDecoder(sess, graph_io.read_meta(graph))
    return decoder.greedy(gen_prompts(graph, ctx), decode.GEN_TOKENS)
