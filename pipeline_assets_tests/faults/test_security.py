"""Security: credentials planted in every free-text and JSON source field and in a GEX URL reach no
output byte, sidecar, log line or metadata entry; traversal in user-supplied names is refused; the
HTTP endpoint refuses oversized and non-JSON bodies and binds loopback by default."""

from __future__ import annotations

import pytest

from pipeline_assets_tests.faults import probes
from pipeline_assets_tests.faults.test_source_faults import assert_ok


@pytest.mark.slow
def test_planted_credentials_never_leave_the_source(base, hq_source):
    result = probes.probe_planted_credentials(base, hq_source)
    assert_ok(result)
    assert any("planted rows" in d and not d.startswith("0 ") for d in result.details)


def test_the_leak_scan_is_not_blind(base):
    """A planted value written as-is is found (so a clean scan means something)."""
    leaked = base / "out.parquet"
    leaked.write_bytes(b"xx" + probes.PLANTED["jwt"].encode() + b"yy")
    assert probes._leaks(leaked.read_bytes()) == ["jwt"]


def test_path_traversal_in_user_supplied_names_is_refused(base):
    assert_ok(probes.probe_path_traversal(base))


def test_http_endpoint_refuses_oversized_and_non_json_and_binds_loopback(base):
    assert_ok(probes.probe_http_endpoint(base))
