"""Keeping credentials inside the operational database: redaction of JSON and free text, and a scan.

Two layers, both applied to every exported text value:

- JSON (`redact_json_text`): a value under a key that looks like a credential (api_key, token,
  secret, password, authorization, cookie, private_key, ...) is replaced by `[REDACTED]`, at any
  depth; the result is canonical JSON (sorted keys, no spaces) so equal documents give equal bytes.
- Free text (`redact_text`, and `redact_text_array` for Arrow columns, vectorized in RE2): a
  `key=value` / `key: value` pair whose key looks like a credential keeps its key and loses its
  value; `Bearer <token>` and well-known token shapes (sk_live_..., AKIA..., JWTs, ghp_...) are
  replaced whole. JSON string values go through the same free-text rule.

`find_secret_values` is the independent scan the asset check runs over the written text.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

REDACTED = "[REDACTED]"

# Key names that hold credentials. Matched as a whole key (after lowercasing and folding - to _)
# or as a part of a longer name: `x_api_key`, `stripeSecret`, `refresh_token`.
_SECRET_KEY_PART = (
    r"api[_\-]?key|access[_\-]?key|secret|passw(?:or)?d|passwd|pwd|token|authorization|"
    r"bearer|credential|private[_\-]?key|cookie|session[_\-]?id|signature|dsn"
)
_SECRET_KEY = re.compile(rf"(?:{_SECRET_KEY_PART})", re.IGNORECASE)

# Free text. RE2-compatible (pyarrow runs it vectorized), so no look-arounds.
KV_PATTERN = (
    r"(?i)((?:[a-z0-9_\-]*(?:" + _SECRET_KEY_PART + r")[a-z0-9_\-]*)[\"']?\s*[:=]\s*)"
    r"(?:bearer\s+|basic\s+)?(\"[^\"]*\"|'[^']*'|\[REDACTED\]|[^\s,;&\"'}\]\[]+)"
)
TOKEN_PATTERN = (
    r"(?i)(?:bearer\s+[a-z0-9._~+/=\-]+|"
    r"\b(?:sk|pk|rk)_(?:live|test)_[a-z0-9]{6,}|"
    r"\bakia[0-9a-z]{12,}|"
    r"\bgh[pousr]_[a-z0-9]{20,}|"
    r"\bxox[abpr]-[a-z0-9\-]{10,}|"
    r"\beyj[a-z0-9_\-]{8,}\.[a-z0-9_\-]{8,}\.[a-z0-9_\-]{8,})"
)
_KV = re.compile(KV_PATTERN)
_TOKEN = re.compile(TOKEN_PATTERN)


def is_secret_key(key: str) -> bool:
    """Whether a JSON key names a credential."""
    return bool(_SECRET_KEY.search(key.replace("-", "_")))


def redact_text(text: str) -> str:
    """Free text with credential values replaced by `[REDACTED]` (keys kept, so it still reads)."""
    text = _TOKEN.sub(REDACTED, text)
    return _KV.sub(lambda m: m.group(1) + REDACTED, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_secret_key(str(k)) and v is not None else _redact_value(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_json_value(value: Any) -> Any:
    """A parsed JSON value with credential-looking keys and values redacted, at any depth."""
    return _redact_value(value)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def redact_json_text(text: str | None) -> str | None:
    """JSON text redacted and re-encoded canonically; None stays None."""
    if text is None:
        return None
    return canonical_json(redact_json_value(json.loads(text)))


def redact_text_array(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """`redact_text` over an Arrow string column, vectorized (RE2)."""
    if values.null_count == len(values):
        return values
    out = pc.replace_substring_regex(values, pattern=TOKEN_PATTERN, replacement=REDACTED)
    return pc.replace_substring_regex(out, pattern=KV_PATTERN, replacement=r"\1" + REDACTED)


def redact_json_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`redact_json_text` over an Arrow string column of JSON documents."""
    return pa.array([redact_json_text(v) for v in values.to_pylist()], pa.string())


def find_secret_values(text: str) -> list[str]:
    """Credential-looking values left in `text` (not the redaction marker): the scan's findings.

    Returned as short, masked descriptions (`api_key=sk_l…`), never the whole value.
    """
    found = []
    for match in _TOKEN.finditer(text):
        found.append(_mask(match.group(0)))
    for match in _KV.finditer(text):
        value = match.group(2).strip("\"'")
        if value and value != REDACTED and not value.startswith("[REDACTED"):
            found.append(match.group(1).strip() + _mask(value))
    return found


def _mask(value: str) -> str:
    return value[:4] + "…" if len(value) > 4 else "…"
