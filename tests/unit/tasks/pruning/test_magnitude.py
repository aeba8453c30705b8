"""Unstructured and N:M magnitude pruning reach exactly the sparsity asked for."""

from __future__ import annotations

import pytest
import torch

from slimline.tasks import _sparsity as sp
from slimline.tasks import _structural as st
from slimline.tasks.families import block_linears, detect
from slimline.tasks.load import load_pretrained
from slimline.tasks.pruning.magnitude import MagnitudeConfig, prune_magnitude


def test_magnitude_mask_is_exact_even_with_ties() -> None:
    w = torch.ones(10, 10)  # every entry ties: a threshold would prune all or none
    mask = sp.magnitude_mask(w, 0.37)
    assert int((~mask).sum()) == 37


def test_global_masks_rank_across_matrices() -> None:
    small, big = torch.full((4, 4), 0.1), torch.full((4, 4), 5.0)
    masks = sp.global_magnitude_masks([small, big], 0.5)
    assert not masks[0].any() and masks[1].all()


def test_nm_mask_keeps_n_largest_per_group() -> None:
    w = torch.tensor([[1.0, -4.0, 3.0, 0.5, 9.0, 8.0, -7.0, 6.0]])
    mask = sp.nm_mask(w, 2, 4)
    assert mask.tolist() == [[False, True, True, False, True, True, False, False]]


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "distilbert"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_sparsity_exact(tiny_model, task_of, family: str, scope: str) -> None:
    model = load_pretrained(str(tiny_model(family)), task_of(family))
    achieved = prune_magnitude(model, MagnitudeConfig(sparsity=0.6, scope=scope))
    mods = [m for _, m in block_linears(model, detect(model))]
    total = sum(m.weight.numel() for m in mods)
    zeros = sum(int((m.weight == 0).sum()) for m in mods)
    assert zeros == round(0.6 * total) if scope == "global" else abs(zeros / total - 0.6) < 1e-3
    assert achieved == pytest.approx(zeros / total)
    if scope == "layer":
        for m in mods:
            assert int((m.weight == 0).sum()) == round(0.6 * m.weight.numel())


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_two_four_pattern(tiny_model, task_of, family: str) -> None:
    model = load_pretrained(str(tiny_model(family)), task_of(family))
    achieved = prune_magnitude(model, MagnitudeConfig(pattern="2:4"))
    assert achieved == pytest.approx(0.5)
    for _, mod in block_linears(model, detect(model)):
        w = st.out_major(mod)
        nonzero_per_group = (w.reshape(w.shape[0], -1, 4) != 0).sum(-1)
        assert (nonzero_per_group <= 2).all()


def test_pattern_and_sparsity_must_agree() -> None:
    with pytest.raises(ValueError, match="contradicts"):
        MagnitudeConfig(pattern="2:4", sparsity=0.3)
    with pytest.raises(ValueError):
        MagnitudeConfig(pattern="4:2")
    with pytest.raises(ValueError):
        MagnitudeConfig(sparsity=1.5)
