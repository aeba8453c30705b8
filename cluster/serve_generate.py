"""POST /generate: text from a causal LM's decoding graph, whole (JSON) or streamed (Server-Sent Events).

The body is read like every other endpoint's (serve_requests: bounded, parsed by orjson whatever
the content type, 413/415, one-line 422 naming the first bad field), then checked by hand:

    {"prompt": "..."} or {"messages": [{"role": "user", "content": "..."}, ...]}  (exactly one)
    "max_new_tokens": 1..limit (64), "temperature": >= 0 (0, greedy), "top_p": (0, 1] (1),
    "seed": 0..2**63-1, "stop": a string or up to 4, "stream": false

Requests are batched across clients: a `GenerationLoop` per replica keeps one
`tasks.generation.Batch` running; a request's prompt is prefilled between two steps and joins it,
and it leaves when it ends (EOS, a stop string, max_new_tokens). Every model call runs in a thread
(`asyncio.to_thread`, one step or one prefill at a time), so the event loop keeps answering
/healthz and reading other requests while tokens are decoded. A client that goes away ends its
sequence at the next step.

The stream: `data: {"text": "<delta>"}` per piece of text, then one event with `finish_reason`,
`prompt_tokens` and `completion_tokens`, then `data: [DONE]`. A model failure after the answer
has started is an event `{"error": "..."}` before `[DONE]` (the status was already 200).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from fastapi import HTTPException, Request
from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse

from slimline.cluster.serve_requests import json_object, kind, one_line, read_body, refuse_media
from slimline.tasks.base import TaskError
from slimline.tasks.generation import MAX_STOPS, Batch, Generator, Messages, Params, Sequence

log = logging.getLogger(__name__)

EXPECTED = '(expected {"prompt": "..."} or {"messages": [{"role": "...", "content": "..."}]})'
FIELDS = ("prompt", "messages", "max_new_tokens", "temperature", "top_p", "seed", "stop", "stream")
MAX_MESSAGES = 64
MAX_STOP_CHARS = 64
MAX_TEMPERATURE = 100.0
MAX_SEED = 2**63 - 1  # numpy's generators take any non-negative int; JSON clients take 64 bits


class Generation(BaseModel):
    """POST /generate (stream false): the generated text and how it ended."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length", "eos"]
    prompt_tokens: int
    completion_tokens: int
    version: str | None = None


@dataclass(frozen=True)
class GenerateRequest:
    """A checked /generate body."""

    prompt: str | None
    messages: Messages | None
    params: Params
    stream: bool


def request_body(max_new_tokens_limit: int, max_prompt_chars: int) -> dict[str, Any]:
    """The OpenAPI `requestBody` of POST /generate under these limits."""
    message = {
        "type": "object",
        "required": ["role", "content"],
        "additionalProperties": False,
        "properties": {
            "role": {"type": "string", "minLength": 1, "maxLength": 32},
            "content": {"type": "string", "maxLength": max_prompt_chars},
        },
    }
    stop_str = {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS}
    props = {
        "prompt": {"type": "string", "minLength": 1, "maxLength": max_prompt_chars},
        "messages": {"type": "array", "minItems": 1, "maxItems": MAX_MESSAGES, "items": message},
        "max_new_tokens": {"type": "integer", "minimum": 1, "maximum": max_new_tokens_limit, "default": 64},
        "temperature": {"type": "number", "minimum": 0, "maximum": MAX_TEMPERATURE, "default": 0},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1},
        "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
        "stop": {"oneOf": [stop_str, {"type": "array", "maxItems": MAX_STOPS, "items": stop_str}]},
        "stream": {"type": "boolean", "default": False},
    }
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": props,
        "oneOf": [{"required": ["prompt"]}, {"required": ["messages"]}],
    }
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def parse_generate(body: bytes, *, max_new_tokens_limit: int, max_prompt_chars: int) -> GenerateRequest:
    """The checked request of a /generate body; else a 422 naming the first bad field."""
    doc = json_object(body, FIELDS, EXPECTED)
    if ("prompt" in doc) == ("messages" in doc):
        raise _bad("body.prompt", "give exactly one of prompt and messages")
    prompt, messages = doc.get("prompt"), None
    if "prompt" in doc:
        if not isinstance(prompt, str) or not prompt:
            raise _bad("body.prompt", f"expected a non-empty string, got {kind(prompt)}")
        _cap("body.prompt", len(prompt), max_prompt_chars)
    else:
        messages = _messages(doc["messages"], max_prompt_chars)
    default = min(64, max_new_tokens_limit)
    max_new = _int(doc, "max_new_tokens", default, 1, max_new_tokens_limit)
    temperature = _number(doc, "temperature", 0.0)
    if not 0 <= temperature <= MAX_TEMPERATURE:
        raise _bad("body.temperature", f"expected 0 to {MAX_TEMPERATURE:g}, got {temperature:g}")
    top_p = _number(doc, "top_p", 1.0)
    if not 0 < top_p <= 1:
        raise _bad("body.top_p", f"expected more than 0 and at most 1, got {top_p:g}")
    seed = _int(doc, "seed", None, 0, MAX_SEED)
    stream = doc.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("body.stream", f"expected a boolean, got {kind(stream)}")
    params = Params(max_new, temperature, top_p, seed, _stops(doc.get("stop")))
    return GenerateRequest(prompt, messages, params, stream)


def _messages(value: object, max_chars: int) -> Messages:
    if not isinstance(value, list) or not value:
        raise _bad("body.messages", f"expected a non-empty list of messages, got {kind(value)}")
    if len(value) > MAX_MESSAGES:
        raise _bad("body.messages", f"at most {MAX_MESSAGES} messages, got {len(value)}")
    total = 0
    for i, m in enumerate(value):
        where = f"body.messages.{i}"
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise _bad(where, 'expected {"role": "...", "content": "..."}')
        if not isinstance(m["role"], str) or not 0 < len(m["role"]) <= 32:
            raise _bad(f"{where}.role", "expected a string of 1 to 32 characters")
        if not isinstance(m["content"], str):
            raise _bad(f"{where}.content", f"expected a string, got {kind(m['content'])}")
        total += len(m["content"])
        _cap(f"{where}.content", total, max_chars)
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _stops(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > MAX_STOPS:
        raise _bad("body.stop", f"expected a string or a list of at most {MAX_STOPS} strings")
    for i, s in enumerate(stops):
        if not isinstance(s, str) or not 0 < len(s) <= MAX_STOP_CHARS:
            raise _bad(f"body.stop.{i}", f"expected a string of 1 to {MAX_STOP_CHARS} characters")
    return tuple(stops)


def _int(doc: dict[str, Any], name: str, default: int | None, low: int, high: int) -> Any:
    value = doc.get(name, default)
    if value is None and default is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):  # True is an int to Python
        raise _bad(f"body.{name}", f"expected an integer, got {kind(value)}")
    if not low <= value <= high:
        raise _bad(f"body.{name}", f"expected {low} to {high}, got {value}")
    return value


def _number(doc: dict[str, Any], name: str, default: float) -> float:
    value = doc.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _bad(f"body.{name}", f"expected a number, got {kind(value)}")
    return float(value)


def _cap(where: str, chars: int, limit: int) -> None:
    if chars > limit:
        raise HTTPException(422, f"{where}: more than {limit} characters in the prompt (max_prompt_chars)")


def _bad(where: str, what: str) -> HTTPException:
    return HTTPException(422, f"{where}: {what} {EXPECTED}")


class GenerationLoop:
    """One replica's running batch: requests join between steps, up to `max_batch` at once."""

    def __init__(self, generator: Generator, max_batch: int = 8) -> None:
        self.generator, self.max_batch = generator, max_batch
        self.batch = Batch(generator)
        self._pending: list[tuple[Sequence, asyncio.Queue[str | BaseException | None]]] = []
        self._running: dict[int, tuple[Sequence, asyncio.Queue[str | BaseException | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def stream(self, seq: Sequence) -> AsyncIterator[str]:
        """`seq`'s text deltas as the batch decodes them; `seq.result()` once this ends. Leaving
        early (the client went away) cancels the sequence."""
        queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        self._pending.append((seq, queue))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            seq.cancel()  # a no-op once it ended

    async def _run(self) -> None:
        while self._pending or self.batch:
            room = self.max_batch - len(self.batch)
            joining, self._pending = self._pending[:room], self._pending[room:]
            try:
                if joining:  # the prefill of the new prompts, between two steps of the others
                    self._running.update({id(s): (s, q) for s, q in joining})
                    await asyncio.to_thread(self.batch.add, [s for s, _ in joining])
                else:
                    await asyncio.to_thread(self.batch.step)
            except Exception as exc:  # every sequence in the failed call fails; the loop goes on
                log.exception("generation failed for %d sequences", len(joining) or len(self.batch))
                failed = [s for s, _ in joining] if joining else list(self.batch.seqs)
                if not joining:  # the batch's cache is in an unknown state: start a new one
                    self.batch = Batch(self.generator)
                for s in failed:
                    s.cancel()
                    self._running.pop(id(s))[1].put_nowait(exc)
            self._publish()

    def _publish(self) -> None:
        for key, (seq, queue) in list(self._running.items()):
            delta = seq.take()
            if delta:
                queue.put_nowait(delta)
            if seq.done:
                queue.put_nowait(None)
                del self._running[key]


async def generate_response(
    generator: GenerationLoop | None,
    request: Request,
    *,
    max_body_bytes: int,
    max_new_tokens_limit: int,
    max_prompt_chars: int,
    version: str | None = None,
) -> Response:
    """Answer one POST /generate: JSON (`Generation`) or, with `"stream": true`, Server-Sent Events.
    `generator` None (a model that does not decode) is a 404."""
    if generator is None:
        raise HTTPException(404, "this model does not generate: /generate needs a causal LM's decoding graph")
    refuse_media(request.headers)
    body = await read_body(request.headers, request.stream(), max_body_bytes)
    req = parse_generate(body, max_new_tokens_limit=max_new_tokens_limit, max_prompt_chars=max_prompt_chars)
    try:  # tokenising a long prompt or rendering a chat template is work too: off the loop
        seq = await asyncio.to_thread(generator.generator.start, req.prompt, req.messages, req.params)
    except (TaskError, ValueError) as exc:
        where = "prompt" if req.prompt is not None else "messages"
        raise HTTPException(422, f"body.{where}: {one_line(exc)}") from exc
    except Exception as exc:  # a chat template that raises (roles out of order, say) is the request's
        if type(exc).__module__.startswith("jinja2"):
            raise HTTPException(422, f"body.messages: {one_line(exc)}") from exc
        raise
    if req.stream:
        return StreamingResponse(_events(generator, seq), media_type="text/event-stream")
    try:
        async for _ in generator.stream(seq):
            pass
    except Exception as exc:
        raise HTTPException(500, f"the model failed: {type(exc).__name__} (see the replica's log)") from exc
    return Response(orjson.dumps({**seq.result(), "version": version}), media_type="application/json")


def _event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _events(generator: GenerationLoop, seq: Sequence) -> AsyncIterator[bytes]:
    try:
        async for delta in generator.stream(seq):
            yield _event({"text": delta})
        res = seq.result()
        yield _event({k: res[k] for k in ("finish_reason", "prompt_tokens", "completion_tokens")})
    except Exception as exc:
        yield _event({"error": f"the model failed: {type(exc).__name__} (see the replica's log)"})
    yield b"data: [DONE]\n\n"
