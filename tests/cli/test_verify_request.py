"""``authmw verify-request`` (SPEC §4 contract) over the conformance vectors and bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from authmw.cli import main
from tests.support.vectors import Vector, load

POSITIVE = list(load("signed_requests.jsonl"))
NEGATIVE = list(load("signed_requests_negative.jsonl"))
KEYS = {"valid", "scheme", "access_key", "reason", "canonical_request", "string_to_sign"}


class _Stdin(io.StringIO):
    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.buffer = io.BytesIO(data)


def _run(vector: Vector, *extra: str, access_key: bool = True) -> tuple[int, dict[str, object]]:
    at = datetime.fromtimestamp(vector.signed_at, UTC).isoformat()
    argv = [
        "verify-request",
        "--file",
        "-",
        "--secret-key",
        vector.record["secret_key"],
        "--at",
        at,
        "--format",
        "json",
    ]
    if access_key:
        argv += ["--access-key", vector.record["access_key"]]
    out = io.StringIO()
    code = main([*argv, *extra], stdin=_Stdin(vector.wire()), stdout=out)
    return code, json.loads(out.getvalue())


@pytest.mark.parametrize("vector", POSITIVE, ids=lambda v: v.id)
def test_positive_vector_is_valid(vector: Vector) -> None:
    code, report = _run(vector)
    assert set(report) == KEYS
    assert code == 0, report["reason"]
    assert report["valid"] is True
    assert report["reason"] is None
    assert report["scheme"] == vector.record["scheme"]
    assert report["access_key"] == vector.record["access_key"]
    if vector.debug.get("canonical_request"):
        assert report["canonical_request"] == vector.debug["canonical_request"]
        assert report["string_to_sign"] == vector.debug["string_to_sign"]


@pytest.mark.parametrize("vector", NEGATIVE, ids=lambda v: v.id)
def test_negative_vector_is_invalid(vector: Vector) -> None:
    code, report = _run(vector)
    assert code == 1
    assert report["valid"] is False
    assert report["reason"]


def test_without_access_key_any_key_name_is_tried() -> None:
    vector = POSITIVE[0]
    assert _run(vector, access_key=False)[0] == 0


def test_other_access_key_is_invalid(tmp_path: Path) -> None:
    vector = POSITIVE[0]
    code, report = _run(vector, "--access-key", "SOMEONEELSE", access_key=False)
    assert code == 1
    assert str(report["reason"]).startswith("signature_mismatch")


def test_mismatch_shows_canonical_request_in_text_mode() -> None:
    vector = POSITIVE[0]
    out = io.StringIO()
    argv = ["verify-request", "--file", "-", "--secret-key", "wrong", "--at", "2024-05-01T12:34:56Z"]
    assert main(argv, stdin=_Stdin(vector.wire()), stdout=out) == 1
    text = out.getvalue()
    assert "signature_mismatch" in text
    assert vector.debug["canonical_request"] in text
    assert vector.debug["string_to_sign"] in text


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [
        (["verify-request", "--file", "-", "--secret-key", "k"], b"not http at all\x00"),
        (["verify-request", "--file", "/nonexistent/req.http", "--secret-key", "k"], b""),
        (["verify-request", "--file", "-", "--secret-key", "k", "--at", "yesterday"], b"GET / HTTP/1.1\r\n\r\n"),
        (["verify-request", "--secret-key", "k"], b""),
        (["no-such-command"], b""),
    ],
    ids=["garbage", "missing-file", "bad-at", "no-file", "unknown-command"],
)
def test_unusable_input_exits_2(argv: list[str], stdin: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv, stdin=_Stdin(stdin), stdout=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert err.startswith("authmw: ")
    assert len(err.strip().splitlines()) == 1


def test_console_script_reads_a_file(tmp_path: Path) -> None:
    vector = POSITIVE[0]
    request = tmp_path / "req.http"
    request.write_bytes(vector.wire())
    argv = ["verify-request", "--file", str(request), "--secret-key", vector.record["secret_key"]]
    argv += ["--at", "2024-05-01T12:34:56Z", "--format", "json"]
    done = subprocess.run(
        [sys.executable, "-m", "authmw", *argv], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["valid"] is True


def test_help_lists_every_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["verify-request", "--help"])
    assert exited.value.code == 0
    assert "SDK-HMAC-SHA256" in capsys.readouterr().out


def test_undecodable_bytes_never_crash_the_output(tmp_path: Path) -> None:
    raw = (
        b"GET /bucket/\xff\xfekey HTTP/1.1\r\nHost: obs.example.com\r\nX-Amz-Date: 20240501T123456Z\r\n"
        b"Authorization: AWS4-HMAC-SHA256 Credential=AK/20240501/r/s3/aws4_request, SignedHeaders=host;x-amz-date, "
        b"Signature=" + b"0" * 64 + b"\r\n\r\n"
    )
    request = tmp_path / "req.http"
    request.write_bytes(raw)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    for fmt in ("json", "text"):
        argv = ["verify-request", "--file", str(request), "--secret-key", "x", "--at", "2024-05-01T12:34:56Z"]
        done = subprocess.run(
            [sys.executable, "-m", "authmw", *argv, "--format", fmt],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=env,
        )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr
        if fmt == "json":
            assert json.loads(done.stdout)["reason"].startswith("signature_mismatch")
