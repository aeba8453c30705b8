"""What the pruning tests share: a model's task by family, and its outputs on a few sentences."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

ALL = ["bert", "distilbert", "gpt2", "llama", "qwen2"]


@pytest.fixture(scope="session")
def task_of() -> Callable[[str], str]:
    """task_of(family) -> the task the tiny model of that family is built for."""
    return lambda family: {"bert": "feature-extraction", "distilbert": "text-classification"}.get(
        family, "causal-lm"
    )


@pytest.fixture(scope="session")
def outputs() -> Callable[..., torch.Tensor]:
    """outputs(model, tokenizer, texts) -> the model's first output on the first three texts."""

    def run(model: torch.nn.Module, tok, texts: list[str]) -> torch.Tensor:
        enc = tok(texts[:3], return_tensors="pt", padding=True)
        if "token_type_ids" not in tok.model_input_names:
            enc.pop("token_type_ids", None)
        with torch.no_grad():
            return model(**enc)[0]

    return run
