"""What the served model accepts: a bounded JSON body `{"texts": [...]}`, read and checked by hand.

Why not a pydantic body model: FastAPI reads the whole body before it validates, and its 422 echoes
every failing item (2M integers in a 4 MB body came back as a 205 MB answer and left the proxy a
gigabyte bigger); form and text content types reached an error handler that could not encode bytes
(500). Here the body is counted as it streams in (413 past the limit), parsed by orjson whatever the
content type says (`curl -d` sends form content), and checked up to the first bad field, named in
one short line. The checks run before the tokenizer sees a text.

Status codes: 413 body too large; 415 a content type or encoding that cannot be JSON; 422 not the
expected JSON document (too many texts, a text too long, a non-string item included).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from fastapi import HTTPException
from pydantic import BaseModel

EXPECTED = '(expected {"texts": ["...", ...]})'

# Content whose body is never one JSON document: refused (415) before a byte of it is read.
NOT_JSON = ("multipart/",)


class Detail(BaseModel):
    """Every error answer: one line saying what was wrong and what was expected."""

    detail: str


class Embeddings(BaseModel):
    """POST /embed: one vector per text, in order."""

    embeddings: list[list[float]]
    version: str | None


class Labels(BaseModel):
    """POST /classify: the top label and its probability per text, and every class probability."""

    labels: list[str]
    scores: list[float]
    probabilities: list[list[float]]
    version: str | None


class Scores(BaseModel):
    """POST /score: per-token log-probabilities per text."""

    results: list[dict[str, Any]]
    version: str | None


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Detail, "description": "This model serves another endpoint (the line names it)."},
    413: {"model": Detail, "description": "The body is larger than the server's max_body_bytes."},
    415: {"model": Detail, "description": "A content type or encoding that cannot be a JSON document."},
    422: {"model": Detail, "description": "Not the expected document; the line names the first bad field."},
    500: {"model": Detail, "description": "The model failed on a valid request (logged by the replica)."},
}


def request_body(max_texts: int, max_text_chars: int) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a POST endpoint under these limits (what schemathesis fuzzes)."""
    texts = {
        "type": "array",
        "minItems": 1,
        "maxItems": max_texts,
        "items": {"type": "string", "maxLength": max_text_chars},
    }
    schema = {
        "type": "object",
        "required": ["texts"],
        "additionalProperties": False,
        "properties": {"texts": texts},
    }
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def refuse_media(headers: Mapping[str, str]) -> None:
    """415 for a body that cannot be a JSON document; any other content type is parsed as JSON."""
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith(NOT_JSON):
        raise HTTPException(415, f"content-type {quote(ctype)}: send the JSON body as application/json")
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        raise HTTPException(415, f"content-encoding {quote(encoding)}: send the body uncompressed")


async def read_body(headers: Mapping[str, str], stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The body, at most `limit` bytes: a larger Content-Length is refused before reading, and a
    body without one (chunked) is counted as it arrives and refused once it passes the limit."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(f"{int(declared)} bytes", limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit} bytes", limit)
        chunks.append(chunk)
    return b"".join(chunks)


def json_object(
    body: bytes, fields: tuple[str, ...], expected: str = EXPECTED, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The body as a JSON object with every `required` key and none outside `fields`; else 422
    naming what is wrong. orjson refuses invalid UTF-8, lone surrogates, NaN/Infinity and nesting
    deeper than 1024."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"body: JSON decode error: {quote(str(exc), 120)} {expected}") from None
    if not isinstance(doc, dict):
        raise HTTPException(422, f"body: expected an object, got {kind(doc)} {expected}")
    missing = next((key for key in required if key not in doc), None)
    if missing is not None:
        raise HTTPException(422, f"body.{missing}: Field required {expected}")
    extra = next((key for key in doc if key not in fields), None)
    if extra is not None:
        raise HTTPException(422, f"body.{quote(extra)}: Extra inputs are not permitted {expected}")
    return doc


def parse_texts(body: bytes, *, max_texts: int, max_text_chars: int) -> list[str]:
    """The texts of `{"texts": [...]}`; else 422 naming the first bad field."""
    doc = json_object(body, ("texts",), required=("texts",))
    texts = doc["texts"]
    if not isinstance(texts, list):
        raise _bad("body.texts", f"expected a list of strings, got {kind(texts)}")
    if not texts:
        raise _bad("body.texts", "expected at least one text")
    if len(texts) > max_texts:
        raise HTTPException(422, f"body.texts: at most {max_texts} per request, got {len(texts)}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise _bad(f"body.texts.{i}", f"expected a string, got {kind(text)}")
        if len(text) > max_text_chars:
            raise HTTPException(
                422, f"body.texts.{i}: {len(text)} characters, at most {max_text_chars} per text"
            )
    return texts


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line (its last non-empty line: where a traceback ends)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return quote(lines[-1] if lines else type(exc).__name__, limit)


def _too_large(got: str, limit: int) -> HTTPException:
    return HTTPException(413, f"body: {got}, at most {limit} per request (max_body_bytes)")


def _bad(where: str, what: str) -> HTTPException:
    return HTTPException(422, f"{where}: {what} {EXPECTED}")


def kind(value: object) -> str:
    """What a JSON value is, in words, for an error line."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def quote(text: str, limit: int = 40) -> str:
    """`text` cut to `limit` characters, its control characters escaped: it stays one line."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return cut.encode("unicode_escape").decode("ascii") if not cut.isprintable() else cut
