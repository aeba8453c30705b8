"""Generation over a KV-cache decoding graph (tasks.generation) and the /generate answer built on it.

One real export of a tiny Llama decoder (ONNX Runtime GenAI's builder, as the sweep does it), then
everything is checked against definitions: transformers' greedy `generate`, the same request
decoded alone, the text cut before a stop string.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from slimline.tasks import export, load
from slimline.tasks.base import TaskError
from slimline.tasks.generation import Batch, Generator, Params, _top_p
from slimline.tasks.serving import Predictor

pytest.importorskip("onnxruntime_genai", reason="the llm extra (onnxruntime-genai) is not installed")

PROMPTS = ["The history of the city begins", "Water boils", "In the morning the market was full and"]


@pytest.fixture(scope="module")
def graph(tiny_decoder, tmp_path_factory, texts) -> tuple[Path, Path]:
    """(the saved torch model folder, its decoding graph folder)."""
    model_dir = tiny_decoder("llama")
    out = tmp_path_factory.mktemp("gen-graph") / "g"
    rec = export.apply(export.ExportConfig(), model_dir, out, task="causal-lm", texts=texts[:64])
    assert rec["kv_cache"] is True
    return model_dir, out


@pytest.fixture(scope="module")
def gen(graph) -> Generator:
    return Generator.from_predictor(Predictor(graph[1]), graph[1])


def _torch_greedy(model_dir: Path, gen: Generator, prompt: str, new: int) -> list[int]:
    model = load.load_pretrained(str(model_dir), "causal-lm")
    ids = torch.tensor([gen.prompt_ids(prompt)])
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False
        )
    got = out[0, ids.shape[1] :].tolist()
    eos = [i for i, t in enumerate(got) if t in gen.eos_token_ids]
    return got[: eos[0] + 1] if eos else got


def test_greedy_tokens_equal_transformers_generate(graph, gen) -> None:
    for prompt in PROMPTS:
        got = gen.generate(prompt, params=Params(max_new_tokens=24))
        assert got["token_ids"] == _torch_greedy(graph[0], gen, prompt, 24)
        assert got["finish_reason"] == "length" and got["completion_tokens"] == 24
        assert got["prompt_tokens"] == len(gen.prompt_ids(prompt))


def test_stream_deltas_concatenate_to_the_whole_text(gen) -> None:
    for prompt in PROMPTS:
        params = Params(max_new_tokens=20)
        deltas = list(gen.stream(prompt, params=params))
        whole = gen.generate(prompt, params=params)
        assert len(deltas) > 1 and all(deltas) and "".join(deltas) == whole["text"]
        # The text is what follows the prompt: decoding prompt + generated tokens gives prompt + text.
        ids = gen.prompt_ids(prompt)
        assert gen.detokenize(ids + whole["token_ids"]) == gen.detokenize(ids) + whole["text"]


def test_seeded_sampling_is_reproducible_and_moves_with_the_seed(gen) -> None:
    def sample(seed: int, **kw: float) -> list[int]:
        return gen.generate("Water", params=Params(max_new_tokens=16, temperature=0.9, seed=seed, **kw))[
            "token_ids"
        ]

    assert sample(1) == sample(1) and sample(1) != sample(2)
    assert sample(3, top_p=0.8) == sample(3, top_p=0.8) != sample(4, top_p=0.8)
    # A nucleus of one token is the argmax: greedy whatever the seed.
    greedy = gen.generate("Water", params=Params(max_new_tokens=16))["token_ids"]
    assert sample(5, top_p=1e-9) == greedy == sample(6, top_p=1e-9)


def test_top_p_nucleus_is_the_smallest_head_reaching_the_mass() -> None:
    p = np.random.default_rng(0).dirichlet(np.full(50_000, 0.05))
    for top_p in (0.1, 0.5, 0.9, 0.999):
        ids, q = _top_p(p, top_p)
        order = np.argsort(-p, kind="stable")
        n = int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1
        assert set(ids) == set(order[:n]) and q.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(q, p[ids] / p[ids].sum())


def test_stop_strings_cut_the_text_and_end_generation(gen) -> None:
    full = gen.generate(PROMPTS[0], params=Params(max_new_tokens=24))["text"]
    stop = full.split()[3]
    params = Params(max_new_tokens=24, stop=("never-there", stop))
    got = gen.generate(PROMPTS[0], params=params)
    assert got["finish_reason"] == "stop" and got["text"] == full[: full.index(stop)]
    assert got["completion_tokens"] < 24
    assert "".join(gen.stream(PROMPTS[0], params=params)) == got["text"]  # held-back text never leaks


def test_eos_ends_generation(graph, gen) -> None:
    greedy = gen.generate(PROMPTS[1], params=Params(max_new_tokens=8))["token_ids"]
    eos_gen = Generator(gen.session, gen.meta, gen.tokenizer, eos_token_ids=[greedy[2]])
    got = eos_gen.generate(PROMPTS[1], params=Params(max_new_tokens=8))
    assert got["finish_reason"] == "eos" and got["token_ids"] == greedy[:3]
    assert got["text"] == gen.generate(PROMPTS[1], params=Params(max_new_tokens=2))["text"]


def test_long_prompts_are_cut_from_the_left_to_fit_the_positions(gen) -> None:
    assert gen.context == 64  # the tiny model's max_position_embeddings
    prompt = " ".join(f"w{i}" for i in range(200))
    got = gen.generate(prompt, params=Params(max_new_tokens=8))
    assert got["prompt_tokens"] == 56 and got["completion_tokens"] == 8
    assert gen.prompt_ids(prompt, max_new_tokens=8) == gen.tokenizer(prompt)["input_ids"][-56:]
    # More new tokens than positions: one prompt token is kept and generation stops at the context.
    got = gen.generate(prompt, params=Params(max_new_tokens=500))
    assert got["prompt_tokens"] == 1 and got["completion_tokens"] == 63 and got["finish_reason"] == "length"


def test_chat_messages_go_through_the_chat_template(gen) -> None:
    messages = [{"role": "user", "content": "Water boils"}]
    with pytest.raises(TaskError, match="no chat template"):
        gen.prompt_ids(messages=messages)
    tok = load.load_tokenizer(str(Path(gen.tokenizer.name_or_path)))
    tok.chat_template = (
        "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    chat = Generator(gen.session, gen.meta, tok)
    rendered = "user: Water boils\nassistant:"
    assert chat.prompt_ids(messages=messages) == tok(rendered, add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="not both"):
        chat.prompt_ids("x", messages)


def test_batched_decoding_equals_one_at_a_time(gen) -> None:
    """Prompts of different lengths, right-padded in one batch, one joining after 3 steps: the
    same tokens as each decoded alone (GroupQueryAttention reads each row's own length)."""
    params = [Params(max_new_tokens=n) for n in (20, 7, 13)] + [
        Params(max_new_tokens=9, temperature=0.7, seed=3)
    ]
    prompts = [*PROMPTS, "A fourth prompt, sampled"]
    alone = [gen.generate(p, params=q) for p, q in zip(prompts, params, strict=True)]
    assert gen.generate_batch(list(zip(prompts, params, strict=True))) == alone
    seqs = [gen.start(p, params=q) for p, q in zip(prompts, params, strict=True)]
    batch = Batch(gen)
    batch.add(seqs[:2])
    for _ in range(3):
        batch.step()
    batch.add(seqs[2:])
    while batch:
        batch.step()
    assert [s.result() for s in seqs] == alone


def _request(body: dict) -> object:
    from starlette.requests import Request

    raw = orjson.dumps(body)
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    scope = {"type": "http", "method": "POST", "path": "/generate", "headers": headers, "query_string": b""}
    return Request(scope, receive)


def test_generate_response_answers_json_and_server_sent_events(gen) -> None:
    from fastapi import HTTPException

    from slimline.cluster.serve_generate import GenerationLoop, generate_response

    limits = {"max_body_bytes": 1 << 20, "max_new_tokens_limit": 32, "max_prompt_chars": 1000}

    async def main() -> tuple[list, list, list]:
        loop = GenerationLoop(gen, max_batch=4)
        bodies = [{"prompt": p, "max_new_tokens": 12} for p in PROMPTS]
        answers = await asyncio.gather(*(generate_response(loop, _request(b), **limits) for b in bodies))
        streamed = []
        for b in bodies:
            resp = await generate_response(loop, _request({**b, "stream": True}), **limits)
            assert resp.media_type == "text/event-stream"
            streamed.append(b"".join([chunk async for chunk in resp.body_iterator]))
        with pytest.raises(HTTPException) as none:
            await generate_response(None, _request(bodies[0]), **limits)
        with pytest.raises(HTTPException) as chat:
            await generate_response(loop, _request({"messages": [{"role": "u", "content": "x"}]}), **limits)
        return [orjson.loads(a.body) for a in answers], streamed, [none.value, chat.value]

    answers, streamed, errors = asyncio.run(main())
    for prompt, got, events in zip(PROMPTS, answers, streamed, strict=True):
        want = gen.generate(prompt, params=Params(max_new_tokens=12))
        assert got == {**want, "version": None}
        chunks = events.split(b"\n\n")
        assert chunks[-2:] == [b"data: [DONE]", b""] and all(c.startswith(b"data: ") for c in chunks[:-1])
        data = [orjson.loads(c[6:]) for c in chunks[:-2]]
        assert "".join(d["text"] for d in data[:-1]) == want["text"]
        assert data[-1] == {
            "finish_reason": "length",
            "prompt_tokens": want["prompt_tokens"],
            "completion_tokens": 12,
        }
    assert errors[0].status_code == 404
    assert (
        errors[1].status_code == 422
        and "body.messages: " in errors[1].detail
        and "chat template" in errors[1].detail
    )
