"""The reference stage: the baseline's outputs on the eval set, ONNX fp32 (what variants are judged
against) and torch fp32 (how faithful the export is), with the task's own metrics."""

from __future__ import annotations

import numpy as np

from slimline.tasks import decode, evaluate, metrics, pipeline
from slimline.tasks import graph as graph_io
from slimline.tasks.base import Record
from slimline.tasks.load import load_pretrained, load_tokenizer
from slimline.tasks.stages._outputs import gen_prompts, generate, outputs, task_metrics
from slimline.tasks.stages.base import StageCall, StageKind


def run(call: StageCall) -> Record:
    """Baseline outputs of the parent graph, and of the loaded base model (the stage's need)."""
    graph, base, out, ctx = call.src, call.needed(), call.out, call.ctx
    onnx_out = outputs(graph, ctx)
    pipe = pipeline.from_meta(graph_io.read_meta(graph))  # torch is reduced exactly as the graph is
    model = load_pretrained(base["path"], ctx.task)
    torch_out = evaluate.torch_outputs(
        model,
        load_tokenizer(base["path"]),
        ctx.task,
        ctx.eval_texts,
        batch_size=ctx.eval_batch,
        max_length=ctx.max_length,
        pipeline=pipe,
    )
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "reference.npy", onnx_out.values)
    rec: Record = {
        "path": str(graph),
        "reference": str(out / "reference.npy"),
        "nll": onnx_out.nll,
        "onnx_vs_torch_fidelity": metrics.fidelity(torch_out, onnx_out),
        "task_metrics": task_metrics(onnx_out, ctx),
        "pipeline": pipe.to_json(),
    }
    if onnx_out.top_ids is not None and onnx_out.top_logp is not None:  # causal-lm: KL's reference
        np.save(out / "top_ids.npy", onnx_out.top_ids)
        np.save(out / "top_logp.npy", onnx_out.top_logp)
        rec["top"] = [str(out / "top_ids.npy"), str(out / "top_logp.npy")]
    if graph_io.read_meta(graph).get("kv_cache"):  # decoding graphs: the greedy tokens to agree with
        generated = generate(graph, ctx)
        np.save(out / "generated.npy", generated)
        rec["generated"] = str(out / "generated.npy")
        ids = gen_prompts(graph, ctx)
        rec["onnx_vs_torch_generation_agreement"] = decode.generation_agreement(
            generated, decode.torch_greedy(model, ids, decode.GEN_TOKENS)
        )
    return rec


STAGE = StageKind(
    kind="reference",
    run=run,
    doc="baseline outputs on the eval set (ONNX and torch fp32): what every variant is judged against",
    # 3: KL over top-k, rated pairs, task deltas; 4: greedy-generation agreement of decoding graphs;
    # 5: the model's own output pipeline (pooling, normalize, max length, multi-label sigmoid)
    logic_version=5,
    cost=2.0,
    needs=("load",),
)
