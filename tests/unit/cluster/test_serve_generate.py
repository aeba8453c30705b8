"""What a POST /generate body may be (cluster/serve_generate.py): every bad field is a 422 with one
line naming it, the limits hold, and the documented schema accepts what the parser accepts."""

from __future__ import annotations

import jsonschema
import orjson
import pytest
from fastapi import HTTPException

from slimline.cluster.serve_generate import MAX_SEED, parse_generate, request_body
from slimline.tasks.generation import Params

LIMITS = {"max_new_tokens_limit": 256, "max_prompt_chars": 100}


def _parse(doc: object) -> object:
    return parse_generate(orjson.dumps(doc), **LIMITS)


def _refused(doc: object) -> HTTPException:
    with pytest.raises(HTTPException) as info:
        _parse(doc)
    assert info.value.status_code == 422 and "\n" not in info.value.detail
    return info.value


def test_defaults_and_every_field() -> None:
    got = _parse({"prompt": "Hi"})
    assert (got.prompt, got.messages, got.stream) == ("Hi", None, False)
    assert got.params == Params(max_new_tokens=64, temperature=0.0, top_p=1.0, seed=None, stop=())
    doc = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_new_tokens": 256,
        "temperature": 1,
        "top_p": 0.5,
        "seed": MAX_SEED,
        "stop": ["\n", "END"],
        "stream": True,
    }
    got = _parse(doc)
    assert got.prompt is None and got.messages == doc["messages"] and got.stream is True
    assert got.params == Params(256, 1.0, 0.5, MAX_SEED, ("\n", "END"))
    assert _parse({"prompt": "x", "stop": "###"}).params.stop == ("###",)
    # The default never passes a lower limit.
    assert (
        parse_generate(b'{"prompt": "x"}', max_new_tokens_limit=16, max_prompt_chars=10).params.max_new_tokens
        == 16
    )


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({}, "body.prompt"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "x"}]}, "body.prompt"),
        (["x"], "body"),
        ({"prompt": ""}, "body.prompt"),
        ({"prompt": 3}, "body.prompt"),
        ({"prompt": "x" * 101}, "body.prompt"),
        ({"prompt": "x", "texts": ["x"]}, "body.texts"),
        ({"messages": []}, "body.messages"),
        ({"messages": "hi"}, "body.messages"),
        ({"messages": [{"role": "user"}]}, "body.messages.0"),
        ({"messages": [{"role": "user", "content": "x", "name": "y"}]}, "body.messages.0"),
        ({"messages": [{"role": "", "content": "x"}]}, "body.messages.0.role"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "body.messages.0.content"),
        ({"messages": [{"role": "user", "content": "x" * 60}] * 2}, "body.messages.1.content"),
        ({"messages": [{"role": "user", "content": "x"}] * 65}, "body.messages"),
        ({"prompt": "x", "max_new_tokens": 0}, "body.max_new_tokens"),
        ({"prompt": "x", "max_new_tokens": 257}, "body.max_new_tokens"),
        ({"prompt": "x", "max_new_tokens": 2.0}, "body.max_new_tokens"),
        ({"prompt": "x", "max_new_tokens": True}, "body.max_new_tokens"),
        ({"prompt": "x", "max_new_tokens": None}, "body.max_new_tokens"),
        ({"prompt": "x", "temperature": -0.1}, "body.temperature"),
        ({"prompt": "x", "temperature": "hot"}, "body.temperature"),
        ({"prompt": "x", "temperature": 1e9}, "body.temperature"),
        ({"prompt": "x", "top_p": 0}, "body.top_p"),
        ({"prompt": "x", "top_p": 1.5}, "body.top_p"),
        ({"prompt": "x", "seed": -1}, "body.seed"),
        ({"prompt": "x", "seed": 1.5}, "body.seed"),
        ({"prompt": "x", "seed": 2**63}, "body.seed"),
        ({"prompt": "x", "stop": ""}, "body.stop.0"),
        ({"prompt": "x", "stop": ["a", 1]}, "body.stop.1"),
        ({"prompt": "x", "stop": ["a"] * 5}, "body.stop"),
        ({"prompt": "x", "stop": {"a": 1}}, "body.stop"),
        ({"prompt": "x", "stop": "s" * 65}, "body.stop.0"),
        ({"prompt": "x", "stream": "yes"}, "body.stream"),
        ({"prompt": "x", "stream": 1}, "body.stream"),
    ],
)
def test_bad_fields_are_a_422_naming_the_field(doc: object, field: str) -> None:
    assert _refused(doc).detail.startswith(f"{field}: ")


@pytest.mark.parametrize(
    "body", [b"not json", b'{"prompt": NaN}', b'{"prompt": "\\ud800"}', b'{"prompt": "caf\xe9"}']
)
def test_bytes_that_are_no_json_document_are_a_422(body: bytes) -> None:
    with pytest.raises(HTTPException) as info:
        parse_generate(body, **LIMITS)
    assert info.value.status_code == 422 and info.value.detail.startswith("body: JSON decode error")


def test_numbers_past_64_bits_are_a_422() -> None:
    with pytest.raises(HTTPException) as info:  # orjson reads 2**64 as a float: not an integer
        parse_generate(b'{"prompt": "x", "seed": 18446744073709551616}', **LIMITS)
    assert info.value.status_code == 422 and info.value.detail.startswith("body.seed: expected an integer")


def test_an_odd_extra_key_stays_one_short_line() -> None:
    detail = _refused({"prompt": "x", "a\nb" * 100: 1}).detail
    assert detail.startswith("body.a\\nb") and len(detail) < 200


def test_the_schema_accepts_what_the_parser_accepts_and_refuses_the_rest() -> None:
    schema = request_body(**LIMITS)["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator.check_schema(schema)
    valid = jsonschema.Draft202012Validator(schema)
    good = [
        {"prompt": "Hi"},
        {"prompt": "Hi", "stop": "x", "stream": True, "seed": 0, "top_p": 1, "temperature": 0},
        {"messages": [{"role": "user", "content": "Hi"}], "max_new_tokens": 256, "stop": ["a", "b"]},
    ]
    for doc in good:
        assert valid.is_valid(doc)
        _parse(doc)
    bad = [{}, {"prompt": "x", "messages": [{"role": "u", "content": "x"}]}, {"prompt": "x", "top_p": 0}]
    bad += [{"prompt": "x", "max_new_tokens": 257}, {"prompt": ""}, {"prompt": "x", "extra": 1}]
    for doc in bad:
        assert not valid.is_valid(doc)
        _refused(doc)
