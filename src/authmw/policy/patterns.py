"""Glob patterns of actions (``modelarts:*:delete*``), resources and ``StringLike``/``StringMatch`` values.

``*`` is any run of characters and ``?`` exactly one; there is no escape syntax. A pattern is compiled once
into a :class:`Glob` that matches without backtracking: it is split on its ``*`` runs into fixed-width spans;
the first must match at the start, the last at the end, and each middle one is placed at its leftmost
occurrence after the previous one (a leftmost placement leaves the most room for the rest, so it is never
wrong to commit to it). The searches move forward only, so matching costs about one scan of the subject (times
the width of a ``?`` run), never the exponential time a backtracking regex takes on ``a*a*a*…b``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Glob", "compile_glob", "glob_escape", "is_glob"]


def is_glob(text: str, *, question_mark: bool = True) -> bool:
    """Whether ``text`` needs a :class:`Glob`: it has wildcards (or literal markers from :func:`glob_escape`)."""
    return "*" in text or (question_mark and "?" in text) or _LITERAL_STAR in text or _LITERAL_QUESTION in text


# Substituted variable text must match literally, while the policy author's own text has no escape syntax:
# its '*' and '?' are marked with private-use characters that compile_glob turns back into literals.
_LITERAL_STAR, _LITERAL_QUESTION = "\ue000", "\ue001"
_STAR, _ONE = object(), object()  # the wildcard tokens of a parsed pattern


def glob_escape(text: str) -> str:
    """Text inserted into a pattern (a substituted variable) must match literally."""
    return text.replace("*", _LITERAL_STAR).replace("?", _LITERAL_QUESTION)


#: Literal runs longer than this are searched with a compiled literal regex: ``re`` scans for a literal with a
#: KMP table (linear), where ``str.find`` can take ``len(subject) × len(run)`` steps on runs of ~20 to ~100
#: characters (``a…aba…a`` in ``a…a``); shorter runs keep ``str.find``, which is faster on them.
_FIND_LIMIT = 16


@dataclass(frozen=True, slots=True)
class _Span:
    """A fixed-width run of literal characters and ``?``: its literal chunks as ``(offset, text)``."""

    width: int
    chunks: tuple[tuple[int, str], ...]
    question: bool  # it has a '?'
    #: A regex of literals and ``.`` only, for runs with ``?`` or longer than ``_FIND_LIMIT``. It has no
    #: quantifier or alternation, so nothing to backtrack into: an attempt at one position costs at most
    #: ``width`` steps (and a literal is found by a linear KMP scan).
    search: Callable[[str, int, int], re.Match[str] | None] | None

    def at(self, subject: str, pos: int) -> bool:
        """Whether the span matches at ``pos`` (the caller has checked that it fits)."""
        return all(subject.startswith(text, pos + offset) for offset, text in self.chunks)

    def find(self, subject: str, start: int, end: int) -> int:
        """The leftmost position in ``start..end - width`` where the span matches, or -1."""
        if self.search is not None:
            found = self.search(subject, start, end)
            return -1 if found is None else found.start()
        if not self.chunks:
            return start if start <= end else -1
        return subject.find(self.chunks[0][1], start, end)  # no '?': one chunk at offset 0, the whole span


def _span(tokens: list[object], *, searched: bool = False) -> _Span:
    """A span of ``tokens``; only a ``searched`` one (between two ``*``) needs its ``search`` compiled."""
    chunks: list[tuple[int, str]] = []
    text: list[str] = []
    for offset, token in enumerate([*tokens, _ONE]):  # a sentinel closes the last chunk
        if token is _ONE:
            if text:
                chunks.append((offset - len(text), "".join(text)))
                text = []
        else:
            text.append(str(token))
    question = _ONE in tokens
    search = None
    if searched and (question or len(tokens) > _FIND_LIMIT):
        regex = "".join("." if token is _ONE else re.escape(str(token)) for token in tokens)
        search = re.compile(regex, re.DOTALL).search
    return _Span(len(tokens), tuple(chunks), question, search)


@dataclass(frozen=True, slots=True)
class _Piece:
    """A pattern part without the stop character: ``head * middle[0] * … * tail`` (``tail`` None: no ``*``)."""

    head: _Span
    middle: tuple[_Span, ...]
    tail: _Span | None

    def matches(self, subject: str) -> bool:
        head, tail = self.head, self.tail
        if tail is None:
            return len(subject) == head.width and head.at(subject, 0)
        low, high = head.width, len(subject) - tail.width
        if low > high or not head.at(subject, 0) or not tail.at(subject, high):
            return False
        for span in self.middle:
            found = span.find(subject, low, high)
            if found < 0:
                return False
            low = found + span.width
        return True


def _piece(tokens: list[object]) -> _Piece:
    groups: list[list[object]] = [[]]
    for token in tokens:
        if token is _STAR:
            groups.append([])  # consecutive '*' leave empty groups, dropped below: '**' is '*'
        else:
            groups[-1].append(token)
    if len(groups) == 1:
        return _Piece(_span(groups[0]), (), None)
    middle = tuple(_span(group, searched=True) for group in groups[1:-1] if group)
    return _Piece(_span(groups[0]), middle, _span(groups[-1]))


@dataclass(frozen=True, slots=True)
class Glob:
    """A compiled pattern: ``matches(subject)`` is the whole subject matching, in O(len(subject) × spans).

    With a ``stop`` character, wildcards never match it, so the subject's stop characters must line up with
    the pattern's one for one: both are split on it and matched part by part.

    The common shapes take a shortcut: ``prefix*suffix`` without ``stop`` compares the ends; with ``stop`` and
    at most one ``*`` run per part (``modelarts:*:delete*``), a regex with one ``[^stop]*`` per part. Such a
    quantifier cannot cross the literal stop that ends its part, so retrying it never multiplies with
    another: at worst each character of the part is retried against the rest of that part.
    """

    pattern: str
    literal: str | None  # the whole pattern when it has no wildcard: plain equality
    stop: str
    pieces: tuple[_Piece, ...]
    wildcards: int  # '*' and '?' as written (before '**' collapses): what the validator bounds
    affix: tuple[str, str] | None = None  # prefix*suffix, no stop
    fullmatch: Callable[[str], re.Match[str] | None] | None = None  # at most one '*' run per part, with stop

    @property
    def searched_width(self) -> int:
        """The widest run with ``?`` between two ``*``: searching for it costs up to that many steps a character."""
        return max((span.width for piece in self.pieces for span in piece.middle if span.question), default=0)

    @property
    def test(self) -> Callable[[str], object]:
        """The cheapest call whose result is truthy exactly when ``subject`` matches (for hot loops)."""
        if self.literal is not None:
            return self.literal.__eq__
        return self.fullmatch if self.fullmatch is not None else self.matches

    def matches(self, subject: str) -> bool:
        if self.literal is not None:
            return subject == self.literal
        if self.fullmatch is not None:
            return self.fullmatch(subject) is not None
        if self.affix is not None:
            prefix, suffix = self.affix
            return len(subject) >= len(prefix) + len(suffix) and subject.startswith(prefix) and subject.endswith(suffix)
        if not self.stop:
            return self.pieces[0].matches(subject)
        parts = subject.split(self.stop)
        pieces = self.pieces
        if len(parts) != len(pieces):
            return False
        return all(piece.matches(part) for piece, part in zip(pieces, parts, strict=True))


@lru_cache(maxsize=4096)
def compile_glob(pattern: str, *, question_mark: bool = True, stop: str = "") -> Glob:
    """``*`` = any run of characters (not crossing ``stop``), ``?`` = exactly one (if ``question_mark``)."""
    if len(stop) > 1 or stop in ("*", "?", _LITERAL_STAR, _LITERAL_QUESTION):
        raise ValueError("stop is one character other than a wildcard")
    tokens: list[object] = []
    for char in pattern:
        if char == "*":
            tokens.append(_STAR)
        elif char == "?" and question_mark:
            tokens.append(_ONE)
        else:
            tokens.append("*" if char == _LITERAL_STAR else "?" if char == _LITERAL_QUESTION else char)
    wildcards = sum(token is _STAR or token is _ONE for token in tokens)
    if not wildcards:
        return Glob(pattern, "".join(map(str, tokens)), stop, (), 0)
    parts: list[list[object]] = [[]]
    for token in tokens:
        if stop and token == stop:
            parts.append([])
        else:
            parts[-1].append(token)
    pieces = tuple(_piece(part) for part in parts)
    affix = fullmatch = None
    if stop and all(not piece.middle for piece in pieces):  # at most one '*' run per part
        fullmatch = re.compile(_part_regex(parts, stop), re.DOTALL).fullmatch
    elif not stop and len(pieces) == 1 and not pieces[0].middle and pieces[0].tail and _ONE not in tokens:
        affix = (
            pieces[0].head.chunks[0][1] if pieces[0].head.chunks else "",
            pieces[0].tail.chunks[0][1] if pieces[0].tail.chunks else "",
        )
    return Glob(pattern, None, stop, pieces, wildcards, affix, fullmatch)


def _part_regex(parts: list[list[object]], stop: str) -> str:
    """The regex of parts with at most one ``*`` run each: ``[^stop]*`` once per run, ``[^stop]`` per ``?``."""
    out = []
    for part in parts:
        text: list[str] = []
        for token in part:
            if token is _STAR:
                if not text or text[-1] != f"[^{re.escape(stop)}]*":
                    text.append(f"[^{re.escape(stop)}]*")
            elif token is _ONE:
                text.append(f"[^{re.escape(stop)}]")
            else:
                text.append(re.escape(str(token)))
        out.append("".join(text))
    return re.escape(stop).join(out)
