"""The floor an engineer would write by hand: one uvicorn process, one ORT session, same batching.

    python benchmarks/serve_floor.py GRAPH_FOLDER --port 8799 [--threads N] [--max-batch-size 16]

POST /embed (or /classify, /score by the graph's task) and GET /healthz, with the same request
checks (`cluster.serve_requests`), the same adaptive batcher (`cluster.batching`) and the same
Predictor as a Serve replica, and nothing else: no proxy, no router, no second process.
benchmarks/serve.py loads it beside the Serve deployment, so its table shows what Serve costs.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response

from slimline.cluster.batching import Batcher
from slimline.cluster.serve_requests import parse_texts, read_body
from slimline.tasks.serving import Predictor


def app_for(folder: str, threads: int, max_batch_size: int) -> FastAPI:
    """The hand-written server's app over one graph folder."""
    predictor = Predictor(folder, threads=threads)
    batcher: Batcher[dict[str, Any]] = Batcher(
        lambda texts: predictor.predict(texts, max_batch_size), max_batch_size
    )
    app = FastAPI()

    @app.post(f"/{predictor.endpoint}")
    async def answer(request: Request) -> Response:
        body = await read_body(request.headers, request.stream(), 1 << 20)
        texts = parse_texts(body, max_texts=256, max_text_chars=20_000)
        try:
            got = await batcher.submit(texts)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        key = {"embed": "embedding"}.get(predictor.endpoint)
        payload = {"embeddings": [r[key] for r in got]} if key else {"results": got}
        return Response(orjson.dumps(payload), media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graph")
    ap.add_argument("--port", type=int, default=8799)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-batch-size", type=int, default=16)
    args = ap.parse_args()
    app = app_for(args.graph, args.threads, args.max_batch_size)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
