"""A server that answers but is not Ray's Jobs API: every jobs/submit command is one line, exit 2."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

HTML = "<!doctype html>\n<html><body>\n<h1>Oops</h1>\n</body></html>\n"
RAY_VERSION = json.dumps({"version": "4", "ray_version": "2.60.0", "ray_commit": "x"})


@contextlib.contextmanager
def _server(answer: Callable[..., tuple[int, str, str]]) -> Iterator[str]:
    """A local HTTP server: answer(path) or answer(path, authorization) gives (code, type, body)."""
    takes_auth = answer.__code__.co_argcount > 1

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            auth = self.headers.get("Authorization", "")
            code, ctype, body = answer(self.path, auth) if takes_auth else answer(self.path)
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _reply

        def log_message(self, *args: object) -> None:  # quiet test output
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


ANSWERS = {
    "500": (lambda path: (500, "text/html", HTML), "not a Ray dashboard (HTTP 500)"),
    "404-html": (lambda path: (404, "text/html", HTML), "not a Ray dashboard (HTTP 404)"),
    "200-html": (lambda path: (200, "text/html", HTML), "not a Ray dashboard (HTTP 200"),
    "200-other-json": (lambda path: (200, "application/json", '{"ok": true}'), "not a Ray dashboard"),
    # A proxy that passes the version check through but fails every Jobs call with an HTML page.
    "ray-version-then-500": (
        lambda path: (
            (200, "application/json", RAY_VERSION) if path == "/api/version" else (500, "text/html", HTML)
        ),
        "not a Ray Jobs API answer (HTTP 500)",
    ),
}


@pytest.fixture(params=list(ANSWERS))
def not_ray(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    answer, expected = ANSWERS[request.param]
    with _server(answer) as address:
        yield address, expected


def _one_line(res, *expected: str) -> str:
    assert res.returncode == 2, (res.stdout, res.stderr)
    line = res.stderr.strip()
    assert "\n" not in line and "Traceback" not in line and "<" not in line, line
    assert all(e in line for e in expected), line
    return line


@pytest.mark.parametrize(
    "args",
    [["jobs", "ls"], ["jobs", "status", "j1"], ["jobs", "logs", "j1"], ["jobs", "stop", "j1"]],
    ids=["ls", "status", "logs", "stop"],
)
def test_jobs_commands_against_a_server_that_is_not_ray(not_ray, cli, args: list[str]) -> None:
    address, expected = not_ray
    _one_line(cli(*args, "--address", address), address, expected)


def test_submit_against_a_server_that_is_not_ray(not_ray, cli, tmp_path: Path) -> None:
    address, expected = not_ray
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"version": 1, "name": "tiny", "model": {"source": "/m", "task": "feature-extraction"}}
        )
    )
    res = cli("submit", str(spec), "--address", address, "--tick-id", "t1")
    line = _one_line(res, expected)
    assert address in line or "slimline-tiny-" in line  # the server, or the job it refused


def test_an_address_that_is_not_a_url_is_one_line(cli) -> None:
    _one_line(cli("jobs", "ls", "--address", "head:8265"), "http://HEAD:8265", "head:8265")


def test_a_password_in_the_address_is_never_printed(cli) -> None:
    with _server(lambda path: (500, "text/html", HTML)) as address:
        with_password = address.replace("http://", "http://user:s3cret@")
        line = _one_line(cli("jobs", "ls", "--address", with_password), "HTTP 500")
        assert "s3cret" not in line and "user:***@" in line


# A dashboard with Ray's token auth: the token goes in a header, never into this process's Ray settings.
def test_the_token_is_sent_as_a_header_and_ray_auth_mode_is_left_alone(
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t0ken")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    seen: list[str] = []

    def answer(path: str, auth: str = "") -> tuple[int, str, str]:
        seen.append(auth)
        if auth != "Bearer t0ken":
            return 401, "text/plain", "Unauthorized: Missing authentication token"
        return 200, "application/json", RAY_VERSION if path == "/api/version" else "[]"

    with _server(answer) as address:
        res = cli("jobs", "ls", "--address", address)
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stderr
    assert seen[0] == "" and "Bearer t0ken" in seen[1:]  # the probe, then the Jobs client
    # A later embedded Ray in this process would start in token mode and fail to reach its own GCS.
    assert "RAY_AUTH_MODE" not in os.environ
