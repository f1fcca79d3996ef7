"""Canonicalisation steps shared by the verifier, the client signer and the tests.

Each function reproduces exactly what a real client computes (``research/signing.md``): Huawei's SDK
(``huawei_*``) and botocore's SigV4 (``sigv4_*``). Fast paths skip percent-coding when the input is plain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from urllib.parse import quote, unquote, unquote_plus

from authmw.errors import BadDate

__all__ = [
    "format_basic_date",
    "huawei_canonical_headers",
    "huawei_canonical_query",
    "huawei_canonical_uri",
    "is_plain_query",
    "parse_basic_date",
    "parse_http_date",
    "sigv4_canonical_headers",
    "sigv4_canonical_query",
    "sigv4_canonical_uri",
    "sigv4_raw_query",
]

# RFC 3986 unreserved characters; such a path or query needs no percent-coding.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.~/-]*").fullmatch
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9_.~=&-]*").fullmatch
_EPOCH = datetime(1970, 1, 1)
_OWS = " \t"  # HTTP's optional whitespace; other Unicode spaces are content, never stripped
_CACHED_LENGTH = 256  # longer paths and queries are rare; caching them would only cost memory


def huawei_canonical_uri(path: str) -> str:
    """Huawei: decode, split on ``/`` (so ``%2F`` separates), re-encode each segment, end with ``/``."""
    # The same resource paths and list queries recur: short ones are cached (bounded in count and size).
    return _huawei_uri_cached(path) if len(path) <= _CACHED_LENGTH else _huawei_uri(path)


@lru_cache(maxsize=1024)
def _huawei_uri_cached(path: str) -> str:
    return _huawei_uri(path)


def _huawei_uri(path: str) -> str:
    if not _PLAIN_PATH(path):
        path = "/".join(quote(segment, safe="~") for segment in unquote(path).split("/"))
    return path if path.endswith("/") else path + "/"


def _huawei_pairs(query: str) -> list[tuple[str, str]]:
    pairs = []
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key:
            # Real Huawei clients never send a raw "+" (they send %2B); applications read one as a space,
            # so it is canonicalised as a space: a %2B → "+" rewrite then no longer verifies.
            pairs.append((unquote_plus(key), unquote_plus(value)))
    return pairs


def huawei_canonical_query(query: str) -> str:
    """Huawei: decoded ``(key, value)`` pairs (a raw ``+`` is a space), empty keys dropped, sorted, re-encoded."""
    if not query:
        return ""
    return _huawei_query_cached(query) if len(query) <= _CACHED_LENGTH else _huawei_query(query)


@lru_cache(maxsize=1024)
def _huawei_query_cached(query: str) -> str:
    return _huawei_query(query)


def _huawei_query(query: str) -> str:
    if _PLAIN_QUERY(query):
        plain = []
        for item in query.split("&"):
            key, _, value = item.partition("=")
            if "=" in value:  # would need encoding as %3D
                break
            if key:
                plain.append((key, value))
        else:
            plain.sort()
            return "&".join(f"{k}={v}" for k, v in plain)
    pairs = sorted(_huawei_pairs(query))
    return "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in pairs)


def huawei_canonical_headers(headers: Mapping[str, str], names: tuple[str, ...], ows: str = _OWS) -> str:
    """Huawei: ``name:value`` with the value stripped of spaces and tabs (inner ones kept), one per line."""
    return "".join([f"{name}:{headers[name].strip(ows)}\n" for name in names])


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 §5.2.4 plus the AWS rule that empty segments ("//") are dropped.
    kept: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if kept:
                kept.pop()
        elif segment and segment != ".":
            kept.append(segment)
    lead = "/" if path.startswith("/") else ""
    trail = "/" if path.endswith("/") and kept else ""
    return lead + "/".join(kept) + trail


def sigv4_canonical_uri(path: str, *, s3: bool) -> str:
    """SigV4: S3 signs the raw path; other services normalise it and percent-encode it again."""
    if not path:
        return "/"
    if s3:
        return path
    if _PLAIN_PATH(path) and "//" not in path and "/." not in path:
        return path
    return quote(_remove_dot_segments(path) or "/", safe="/~")


def is_plain_query(query: str) -> bool:
    """Only unreserved characters, ``=`` and ``&``: every canonical form of such a query is the same."""
    return _PLAIN_QUERY(query) is not None


def sigv4_canonical_query(query: str, *, exclude: str | None = None) -> str:
    """SigV4 from wire values: decode (``+`` is a space), RFC 3986 re-encode, sort the encoded pairs."""
    if not query:
        return ""
    if is_plain_query(query):  # nothing to decode or encode: the raw form is the canonical one
        return sigv4_raw_query(query, exclude=exclude)
    pairs = []
    for item in query.split("&"):
        key, _, value = item.partition("=")
        name = unquote_plus(key)
        if name == exclude:
            continue
        pairs.append((quote(name, safe="-_.~"), quote(unquote_plus(value), safe="-_.~")))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def sigv4_raw_query(query: str, *, exclude: str | None = None) -> str:
    """SigV4 as botocore signs a URL's own query: raw ``key=value`` parts, sorted, never re-encoded."""
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if exclude is not None and unquote_plus(key) == exclude:
            continue
        pairs.append((key, value))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def sigv4_canonical_headers(headers: Mapping[str, str], names: tuple[str, ...]) -> str:
    """SigV4: ``name:value`` with whitespace runs collapsed to one space ("trimall")."""
    return "".join([f"{name}:{' '.join(headers[name].split())}\n" for name in names])


@lru_cache(maxsize=64)
def _epoch_day(date: str) -> int:
    """Seconds at 00:00 UTC of ``YYYYMMDD``; cached because nearly every request of a day shares it."""
    try:
        day = datetime(int(date[:4]), int(date[4:6]), int(date[6:8]))
    except ValueError:
        raise BadDate("date out of range") from None
    return int((day - _EPOCH).total_seconds())


@lru_cache(maxsize=256)
def parse_basic_date(value: str) -> int:
    """Parse ``YYYYMMDDTHHMMSSZ`` (UTC) into epoch seconds; anything else is :class:`BadDate`.

    Cached: under load, many requests carry the same second."""
    time = value[9:15]
    if not (len(value) == 16 and value[8] == "T" and value[15] == "Z" and value.isascii()):
        raise BadDate("expected YYYYMMDDTHHMMSSZ")
    if not (value[:8].isdigit() and time.isdigit()):
        raise BadDate("expected YYYYMMDDTHHMMSSZ")
    hour, rest = divmod(int(time), 10000)
    minute, second = divmod(rest, 100)
    if hour > 23 or minute > 59 or second > 59:
        raise BadDate("time out of range")
    return _epoch_day(value[:8]) + hour * 3600 + minute * 60 + second


def parse_http_date(value: str) -> int:
    """Parse an RFC 1123 ``Date`` header into epoch seconds."""
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        raise BadDate("expected an RFC 1123 date") from None
    if moment.tzinfo is None:  # "-0000" (RFC 5322: UTC, as botocore's formatdate writes it)
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def format_basic_date(epoch: int) -> str:
    """Epoch seconds → ``YYYYMMDDTHHMMSSZ``."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y%m%dT%H%M%SZ")
