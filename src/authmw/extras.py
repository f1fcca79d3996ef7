"""Which optional extra installs which module: the one table behind every "pip install 'authmw[...]'" hint.

A feature whose module is missing fails with :class:`~authmw.errors.ConfigurationError` naming the extra to
install (the CLI: exit 2), never with a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from authmw.errors import ConfigurationError

__all__ = ["EXTRAS", "missing_extra", "requires"]

#: Top-level module → the smallest extra that installs it (``pyproject.toml``'s optional dependencies).
EXTRAS = {
    "h11": "proxy",
    "httptools": "proxy",
    "httpx": "client",
    "prometheus_client": "proxy",
    "psycopg": "postgres",
    "psycopg_pool": "postgres",
    "redis": "redis",
    "sniffio": "proxy",
    "starlette": "asgi",
    "uvicorn": "proxy",
    "websockets": "proxy",
    "werkzeug": "wsgi",
    "yaml": "yaml",
}


def missing_extra(
    exc: ImportError, *, feature: str | None = None, extra: str | None = None
) -> ConfigurationError | None:
    """What to say when ``exc`` (a failed import) is a missing extra; None if it is not one (an import that
    fails for another reason is a bug, not an installation choice). ``extra`` names the one ``feature`` needs as
    a whole (``authmw proxy`` needs all of ``proxy``, not only the extra that brings the missing module)."""
    module = (exc.name or "").partition(".")[0]
    if not isinstance(exc, ModuleNotFoundError) or module not in EXTRAS:
        return None
    wanted = extra or EXTRAS[module]
    needs = f"{feature} needs" if feature else "needs"
    return ConfigurationError(f"{needs} the {wanted} extra ({module} is not installed): pip install 'authmw[{wanted}]'")


@contextmanager
def requires(extra: str, feature: str) -> Iterator[None]:
    """Turn a missing module that an extra installs, imported inside the block, into :func:`missing_extra`'s
    error naming ``extra`` (any other import error goes on as it is)."""
    try:
        yield
    except ModuleNotFoundError as exc:
        error = missing_extra(exc, feature=feature, extra=extra)
        if error is None:
            raise
        raise error from None
