"""What a request to the served model may be (cluster/serve_requests.py) and the serve flags checked
before Ray starts: each bad request is one short line with a 4xx, read no further than needed."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from fastapi import HTTPException

from slimline.cli.serve import route_prefix, serve_config
from slimline.cluster.serve import PULL_PREFIX, ServeSource
from slimline.cluster.serve_requests import parse_texts, read_body, refuse_media, request_body
from slimline.pipelines.errors import FatalInputError

LIMITS = {"max_texts": 256, "max_text_chars": 20_000}


def _refused(body: bytes) -> HTTPException:
    with pytest.raises(HTTPException) as info:
        parse_texts(body, **LIMITS)
    return info.value


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not json", "body: JSON decode error"),
        (b'{"texts": [NaN]}', "JSON decode error"),
        (b'{"texts": [Infinity]}', "JSON decode error"),
        (b'{"texts": ["\\ud800"]}', "JSON decode error"),  # a lone surrogate
        (b'{"texts": ["caf\xe9"]}', "not valid UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "depth limit exceeded"),
        (b"", "JSON decode error"),
        (b'["x"]', "body: expected an object, got a list"),
        (b'{"text": ["x"]}', "body.texts: Field required"),
        (b'{"texts": ["x"], "more\\nlines": 1}', "body.more\\nlines: Extra inputs are not permitted"),
        (b'{"texts": "x"}', "body.texts: expected a list of strings, got a string"),
        (b'{"texts": []}', "body.texts: expected at least one text"),
        (orjson.dumps({"texts": ["x"] * 257}), "body.texts: at most 256 per request, got 257"),
        (b'{"texts": ["a", "b", "c", 3, 4]}', "body.texts.3: expected a string, got a number"),
        (orjson.dumps({"texts": ["a", "x" * 20_001]}), "body.texts.1: 20001 characters, at most 20000"),
        (orjson.dumps({"texts": list(range(200_000))}), "at most 256 per request, got 200000"),
    ],
)
def test_a_bad_body_is_a_422_with_one_short_line(body: bytes, says: str) -> None:
    exc = _refused(body)
    assert exc.status_code == 422 and says in exc.detail, exc.detail
    assert "\n" not in exc.detail and len(exc.detail) < 250


def test_a_good_body_gives_its_texts_at_the_limits() -> None:
    texts = ["", "x" * 20_000, "caf\u00e9 \u2603"] + ["y"] * 253
    assert parse_texts(orjson.dumps({"texts": texts}), **LIMITS) == texts


async def _chunks(n: int, size: int, seen: list[int]) -> AsyncIterator[bytes]:
    for _ in range(n):
        seen.append(size)
        yield b"x" * size


def _read(headers: dict[str, str], n: int, size: int, limit: int) -> tuple[bytes | HTTPException, int]:
    seen: list[int] = []
    try:
        return asyncio.run(read_body(headers, _chunks(n, size, seen), limit)), sum(seen)
    except HTTPException as exc:
        return exc, sum(seen)


def test_an_oversize_body_is_refused_before_it_is_read_or_while_it_streams() -> None:
    got, read = _read({"content-length": str(2 << 20)}, 32, 65536, 1 << 20)
    assert isinstance(got, HTTPException) and got.status_code == 413 and read == 0
    assert got.detail == "body: 2097152 bytes, at most 1048576 per request (max_body_bytes)"
    got, read = _read({}, 32, 65536, 1 << 20)  # chunked: no Content-Length
    assert isinstance(got, HTTPException) and got.status_code == 413
    assert read == (1 << 20) + 65536  # stopped at the first chunk past the limit
    got, read = _read({"content-length": str(1 << 20)}, 16, 65536, 1 << 20)
    assert got == b"x" * (1 << 20)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"content-type": "multipart/form-data; boundary=x"}, 415),
        ({"content-type": "application/json", "content-encoding": "gzip"}, 415),
        ({"content-type": "application/x-www-form-urlencoded"}, None),  # curl -d: parsed as JSON
        ({"content-type": "text/plain; charset=utf-8"}, None),
        ({}, None),
    ],
)
def test_only_content_that_cannot_be_json_is_a_415(headers: dict[str, str], code: int | None) -> None:
    if code is None:
        refuse_media(headers)
        return
    with pytest.raises(HTTPException) as info:
        refuse_media(headers)
    assert info.value.status_code == code and "\n" not in info.value.detail


def test_the_documented_body_is_the_one_accepted() -> None:
    schema = request_body(4, 10)["content"]["application/json"]["schema"]
    assert schema["required"] == ["texts"] and schema["additionalProperties"] is False
    texts = schema["properties"]["texts"]
    assert (texts["minItems"], texts["maxItems"], texts["items"]["maxLength"]) == (1, 4, 10)


def _fetch(dest: Path) -> None:
    (dest / "model.onnx").write_bytes(b"graph")


def test_a_replicas_registry_pull_is_removed_when_released_and_its_own_folder_is_kept(tmp_path) -> None:
    pulled = ServeSource(None, fetch=_fetch).local_folder()
    assert pulled.name.startswith(PULL_PREFIX) and pulled.parent == Path(tempfile.gettempdir())
    assert (pulled / "model.onnx").is_file()
    ServeSource(None, fetch=_fetch).release(pulled)
    assert not pulled.exists()
    _fetch(tmp_path)
    own = ServeSource(str(tmp_path), fetch=_fetch)
    assert own.local_folder() == tmp_path
    own.release(tmp_path)
    assert (tmp_path / "model.onnx").is_file()


def test_a_failed_pull_leaves_no_temporary_folder() -> None:
    def broken(dest: Path) -> None:
        (dest / "partial").write_text("x")
        raise OSError("registry went away")

    before = set(Path(tempfile.gettempdir()).glob(PULL_PREFIX + "*"))
    with pytest.raises(OSError, match="went away"):
        ServeSource(None, fetch=broken).local_folder()
    assert set(Path(tempfile.gettempdir()).glob(PULL_PREFIX + "*")) == before


@pytest.mark.parametrize(
    ("given", "taken"), [("/", "/"), ("/v1", "/v1"), ("/v1/", "/v1"), ("/a/b-c", "/a/b-c")]
)
def test_a_route_prefix_serve_can_route_is_taken(given: str, taken: str) -> None:
    assert route_prefix(given) == taken


@pytest.mark.parametrize("given", ["v1", "", "/a b", "/{name}", "/caf\u00e9", "/v1\n"])
def test_a_route_prefix_serve_cannot_route_is_refused_with_one_line(given: str) -> None:
    with pytest.raises(FatalInputError, match=r"^--route-prefix .*: expected a URL path such as /v1"):
        route_prefix(given)


def test_serve_flags_name_themselves_and_the_limits_are_flags_too() -> None:
    with pytest.raises(FatalInputError, match=r"^--gpus: "):
        serve_config(None, {"gpus_per_replica": -1.0})
    with pytest.raises(FatalInputError, match=r"^--max-body-bytes: "):
        serve_config(None, {"max_body_bytes": 10})
    cfg = serve_config(None, {"max_texts": 8, "max_text_chars": 100, "max_body_bytes": 4096})
    assert (cfg.max_texts, cfg.max_text_chars, cfg.max_body_bytes) == (8, 100, 4096)
    assert serve_config(None, {}).max_body_bytes == 1 << 20
