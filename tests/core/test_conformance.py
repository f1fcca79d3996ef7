"""Every captured request of tests/data/conformance/signing verifies (positives) or is refused (negatives)."""

from __future__ import annotations

import pytest

from authmw.rawhttp import parse_raw_request
from authmw.signing import Verifier
from tests.support.vectors import Vector, load, vector_tokens

POSITIVE = list(load("signed_requests.jsonl"))
NEGATIVE = list(load("signed_requests_negative.jsonl"))


def _inspect(vector: Vector):
    verifier = Verifier(keys=vector.keys, clock=lambda: vector.signed_at, security_tokens=vector_tokens(vector))
    return verifier.inspect(parse_raw_request(vector.wire()))


@pytest.mark.parametrize("vector", POSITIVE, ids=lambda v: v.id)
def test_captured_request_verifies(vector: Vector) -> None:
    result = _inspect(vector)
    assert result.valid, result.reason
    assert result.scheme == vector.record["scheme"]
    assert result.access_key == vector.record["access_key"]
    assert result.credential is not None
    expected_method = "temporary" if vector.record["security_token"] else "aksk"
    assert result.credential.method.value == expected_method
    if vector.debug.get("canonical_request"):
        assert result.canonical_request == vector.debug["canonical_request"]
        assert result.string_to_sign == vector.debug["string_to_sign"]


@pytest.mark.parametrize("vector", NEGATIVE, ids=lambda v: v.id)
def test_tampered_request_is_refused(vector: Vector) -> None:
    result = _inspect(vector)
    assert not result.valid
    tamper = vector.record["tamper"]
    code = result.reason.partition(":")[0] if result.reason else ""
    if tamper.startswith("date_shifted"):
        assert code == "date_out_of_window"
    elif tamper == "signature_truncated":
        assert code in {"malformed_authorization", "signature_mismatch"}
    elif tamper == "security_token_changed" or (tamper == "access_key_changed" and vector.record["security_token"]):
        assert code in {"invalid_security_token", "signature_mismatch"}
    elif tamper == "body_byte_flipped":
        assert code in {"signature_mismatch", "body_digest_mismatch"}
    else:
        assert code == "signature_mismatch"


def test_vectors_are_present() -> None:
    assert len(POSITIVE) >= 50
    assert len(NEGATIVE) >= 300
