"""Distillation: the loss math, and a pruned tiny student that really gets closer to its teacher."""

from __future__ import annotations

import itertools

import pytest
import torch

from slimline.tasks import _kd, evaluate, metrics
from slimline.tasks.distillation.kd import DistillConfig
from slimline.tasks.load import load_pretrained, load_tokenizer
from slimline.tasks.pruning.heads import HeadsConfig
from slimline.tasks.pruning.structured import StructuredConfig
from slimline.tasks.stages.distill import apply
from slimline.tasks.stages.prune import apply as prune


def test_losses_vanish_for_identical_outputs_and_grow_with_error() -> None:
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    hs = tuple(torch.randn(2, 4, 8) for _ in range(3))
    same = _kd.hidden_loss(hs, hs, mask)
    assert all(float(v) == pytest.approx(0.0, abs=1e-6) for v in same.values())
    noisy = tuple(h + 0.5 * torch.randn_like(h) for h in hs)
    worse = _kd.hidden_loss(noisy, hs, mask)
    assert all(float(v) > 1e-3 for v in worse.values())
    # Padding does not count: changing only padded positions leaves every part unchanged.
    padded = tuple(h.clone() for h in hs)
    for h in padded:
        h[0, 3] += 100.0
        h[1, 2:] -= 100.0
    assert float(_kd.hidden_loss(padded, hs, mask)["mse"]) == pytest.approx(0.0, abs=1e-6)
    # Relative MSE is scale-free: the same relative error at 10x the scale gives the same loss.
    assert float(_kd.relative_mse(10 * noisy[1], 10 * hs[1], mask)) == pytest.approx(
        float(_kd.relative_mse(noisy[1], hs[1], mask)), rel=1e-5
    )


def test_kl_is_zero_for_same_logits_and_matches_its_definition() -> None:
    torch.manual_seed(0)
    t, s = torch.randn(3, 5), torch.randn(3, 5)
    assert float(_kd.logit_kl(t, t, 2.0)) == pytest.approx(0.0, abs=1e-6)
    p, q = torch.softmax(t / 2, -1), torch.softmax(s / 2, -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean() * 4
    assert float(_kd.logit_kl(s, t, 2.0)) == pytest.approx(float(expected), rel=1e-5)


def test_schedule_warms_up_then_decays_to_zero() -> None:
    lrs = [_kd.warmup_linear_decay(s, 10, 2) for s in range(10)]
    assert lrs[:2] == [0.5, 1.0] and lrs[2] == 1.0
    assert all(a > b for a, b in itertools.pairwise(lrs[2:])) and lrs[-1] == pytest.approx(0.125)
    assert _kd.downsample([1.0, 2.0, 3.0, 4.0], points=2) == [[2, 1.5], [4, 3.5]]


def _fidelity(student_dir, teacher, tok, task: str, texts: list[str]) -> float:
    student = load_pretrained(str(student_dir), task)
    base = evaluate.torch_outputs(teacher, tok, task, texts, max_length=32)
    return metrics.fidelity(base, evaluate.torch_outputs(student, tok, task, texts, max_length=32))


@pytest.mark.parametrize(
    ("family", "pruning"),
    [
        ("bert", StructuredConfig(heads=0.5, ffn=0.5)),  # hidden states: MSE + cosine
        ("distilbert", HeadsConfig(amount=0.5)),  # classifier logits: KL
        ("gpt2", StructuredConfig(heads=0.5, ffn=0.5)),  # next-token logits: KL per token
    ],
)
def test_distilled_student_is_closer_to_its_teacher_on_held_out_text(
    tiny_model, tmp_path, texts, family: str, pruning
) -> None:
    task = {"bert": "feature-extraction", "distilbert": "text-classification"}.get(family, "causal-lm")
    src = tiny_model(family, task, init_range=0.2)
    prune(pruning, src, tmp_path / "pruned", task=task)
    held_out, train = texts[:48], texts[48:]
    cfg = DistillConfig(steps=60, lr=1e-3, batch_size=8, seed=1)
    rec = apply(cfg, tmp_path / "pruned", src, tmp_path / "kd", task=task, texts=train, max_length=32)

    assert rec["loss_end"] < 0.7 * rec["loss_start"], rec["loss_curve"]
    assert rec["loss_curve"][-1][0] == 60 and len(rec["loss_curve"]) <= 50
    teacher, tok = load_pretrained(str(src), task), load_tokenizer(str(src))
    before = _fidelity(tmp_path / "pruned", teacher, tok, task, held_out)
    after = _fidelity(tmp_path / "kd", teacher, tok, task, held_out)
    assert after > before, (before, after)
    # The student keeps its pruned shapes: distillation recovers quality, not size.
    pruned_n = sum(p.numel() for p in load_pretrained(str(tmp_path / "pruned"), task).parameters())
    kd_n = sum(p.numel() for p in load_pretrained(str(tmp_path / "kd"), task).parameters())
    assert kd_n == pruned_n


def test_seeded_runs_repeat_exactly_and_seeds_differ(tiny_model, tmp_path, texts) -> None:
    src = tiny_model("bert", init_range=0.2)
    prune(HeadsConfig(amount=0.5), src, tmp_path / "pruned", task="feature-extraction")
    curves = []
    for i, seed in enumerate([3, 3, 4]):
        cfg = DistillConfig(steps=8, lr=1e-3, batch_size=4, seed=seed)
        rec = apply(
            cfg, tmp_path / "pruned", src, tmp_path / f"kd{i}", task="feature-extraction", texts=texts[48:]
        )
        curves.append(rec["loss_curve"])
    assert curves[0] == curves[1]
    assert curves[0] != curves[2]


def test_no_training_text_is_a_clear_error(tiny_model, tmp_path) -> None:
    from slimline.tasks.base import TaskError

    src = tiny_model("bert")
    with pytest.raises(TaskError, match="training text"):
        apply(DistillConfig(steps=1), src, src, tmp_path / "kd", task="feature-extraction", texts=[])
