"""Redaction (property tests): credentials under secret-looking JSON keys at any depth, and in
`key=value` or Bearer form in free text, never survive; other keys and text stay as they were;
the scan used by the check finds what redaction would have removed."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_assets.lib.hq.redaction import (
    REDACTED,
    is_secret_key,
    redact_json_text,
    redact_text,
    redact_text_array,
)
from pipeline_assets.lib.hq.verify import no_secrets

SECRET_KEYS = [
    "api_key",
    "apiKey",
    "X-Api-Key",
    "token",
    "refresh_token",
    "client_secret",
    "password",
    "Authorization",
    "private_key",
    "cookie",
    "db_password",
]
PLAIN_KEYS = ["latency_ms", "region", "status", "name", "url", "author", "count"]
_secret_values = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=8, max_size=30
).map(lambda s: "S3CR3T" + s)
_plain_values = st.one_of(
    st.integers(), st.booleans(), st.sampled_from(["eu", "ok", "timeout", "a b c"])
)


@st.composite
def documents(draw, depth=0):
    doc = {}
    for key in draw(st.lists(st.sampled_from(PLAIN_KEYS), unique=True, max_size=4)):
        doc[key] = (
            draw(documents(depth + 1)) if depth < 2 and draw(st.booleans()) else draw(_plain_values)
        )
    for key in draw(st.lists(st.sampled_from(SECRET_KEYS), unique=True, max_size=3)):
        doc[key] = draw(_secret_values)
    if depth < 2 and draw(st.booleans()):
        doc["items"] = [draw(documents(depth + 1))]
    return doc


@given(doc=documents())
@settings(max_examples=200, deadline=None)
def test_json_secrets_are_redacted_at_any_depth_and_the_rest_is_kept(doc):
    text = json.dumps(doc)
    out = redact_json_text(text)
    assert "S3CR3T" not in out

    def walk(before, after):
        if isinstance(before, dict):
            for k, v in before.items():
                if is_secret_key(k):
                    assert after[k] == REDACTED
                else:
                    walk(v, after[k])
        elif isinstance(before, list):
            for b, a in zip(before, after):
                walk(b, a)
        else:
            assert before == after

    walk(doc, json.loads(out))
    assert out == redact_json_text(out)  # canonical and stable


_free_text = st.tuples(
    st.sampled_from(["provider said", "retry failed:", ""]),
    st.sampled_from(["api_key=", "password: ", "Authorization: Bearer ", "token=", "X-Api-Key: "]),
    _secret_values,
    st.sampled_from(["", " (401)", "; retrying", ", next"]),
).map(lambda t: f"{t[0]} {t[1]}{t[2]}{t[3]}")


@given(texts=st.lists(_free_text, min_size=1, max_size=5))
@settings(max_examples=200, deadline=None)
def test_free_text_credentials_are_redacted_in_python_and_in_arrow_alike(texts):
    column = redact_text_array(pa.array(texts))
    assert column.to_pylist() == [redact_text(t) for t in texts]
    assert not any("S3CR3T" in t for t in column.to_pylist())


def test_the_scan_finds_a_planted_secret_and_passes_redacted_text(tmp_path):
    clean = tmp_path / "clean.parquet"
    pq.write_table(
        pa.table(
            {
                "m": [
                    redact_json_text('{"api_key": "sk_live_abcdef123456"}'),
                    redact_text("token=abc123"),
                ]
            }
        ),
        clean,
    )
    dirty = tmp_path / "dirty.parquet"
    pq.write_table(pa.table({"m": ["ok", "ok"], "n": ["Bearer abc.def.ghi", "fine"]}), dirty)
    assert no_secrets([str(clean)])[0]
    passed, figures = no_secrets([str(clean), str(dirty)])
    assert not passed and figures["values_with_secrets_by_column"] == {"n": 1}
    assert "abc.def" not in json.dumps(figures)
