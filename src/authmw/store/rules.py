"""The model's rules on names, keys and values: one place for the administration verbs and the importer."""

from __future__ import annotations

import re
import string

from authmw.errors import ChangeRefused
from authmw.sessions import MAX_DURATION, MIN_DURATION

__all__ = [
    "ACCESS_KEY",
    "ALPHANUM",
    "MAX_KEYS_PER_USER",
    "NAME",
    "POLICY_NAME",
    "ROUTE",
    "SECRET",
    "SECRET_ALPHABET",
    "WORKSPACE_NAME",
    "check",
    "check_max_duration",
    "check_name",
    "check_password",
    "check_workspace_name",
]

MAX_KEYS_PER_USER = 2
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.@-]{0,63}")
POLICY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9 _.@-]{0,63}")
WORKSPACE_NAME = re.compile(r"(?![0-9a-f]{32}\Z)[A-Za-z0-9_-]{4,64}")
ACCESS_KEY = re.compile(r"[A-Za-z0-9]{8,128}")
SECRET = re.compile(r"[\x21-\x7e]{16,256}")
ROUTE = re.compile(r"[\x21-\x7e]+( [\x21-\x7e]+)?")
ALPHANUM = string.ascii_uppercase + string.digits
SECRET_ALPHABET = string.ascii_letters + string.digits


def check(pattern: re.Pattern[str], kind: str, value: str, rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ChangeRefused(f"invalid {kind} {value!r}: {rule}")
    return value


def check_name(kind: str, value: str) -> str:
    return check(NAME, f"{kind} name", value, "1-64 of letters, digits, _ . @ - starting with a letter or _")


def check_password(password: str) -> str:
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise ChangeRefused("a password must be valid text") from None
    if not 8 <= len(password) <= 128 or not password.isprintable():
        raise ChangeRefused("a password needs 8-128 printable characters")
    return password


def check_max_duration(value: object, label: str = "--max-duration") -> int:
    """An agency's longest session, in seconds: what a session may last at all (sessions' bounds)."""
    if type(value) is not int or not MIN_DURATION <= value <= MAX_DURATION:
        raise ChangeRefused(f"{label} must be {MIN_DURATION}-{MAX_DURATION} seconds")
    return value


def check_workspace_name(name: str) -> str:
    check(WORKSPACE_NAME, "workspace name", name, "4-64 of letters, digits, _ and -, not 32 hex digits")
    if name.lower() == "default":
        raise ChangeRefused("the workspace name 'default' is reserved")
    return name
