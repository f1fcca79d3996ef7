"""A request-target with a fragment is refused by the one constructor every adapter goes through (and by the raw
request parser, whose absolute-form handling would otherwise cut the fragment off)."""

from __future__ import annotations

import pytest

from authmw.errors import MalformedRequest
from authmw.models import Request
from authmw.rawhttp import parse_raw_request


@pytest.mark.parametrize("target", ["/reports/42#/raw", "/reports/42?x=1#f", "/a#", b"/reports/42#/raw"])
def test_request_build_refuses_a_fragment(target: str | bytes) -> None:
    with pytest.raises(MalformedRequest):
        Request.build("GET", target)


@pytest.mark.parametrize("target", [b"/reports/42#/raw", b"http://h.example/reports/42#/raw"])
def test_the_raw_parser_refuses_a_fragment(target: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parse_raw_request(b"GET " + target + b" HTTP/1.1\r\nHost: h.example\r\n\r\n")


def test_an_encoded_hash_is_data() -> None:
    assert Request.build("GET", "/reports/42%23?q=%23").path == "/reports/42%23"
