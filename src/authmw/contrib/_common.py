"""What every framework helper does: find the context and guard the middleware left, decide, audit."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar, cast

from authmw.audit import log_decision
from authmw.errors import AuthmwError, ConfigurationError
from authmw.guard import Guard
from authmw.models import AuthContext

__all__ = ["CONTEXT_KEY", "GUARD_KEY", "View", "authorize", "context_of", "decided", "guard_of", "wrap_view"]

CONTEXT_KEY = "authmw"  # in the ASGI scope and the WSGI environ
GUARD_KEY = "authmw.guard"
View = TypeVar("View", bound=Callable[..., Any])


def context_of(carrier: Mapping[str, Any]) -> AuthContext:
    """The :class:`AuthContext` the middleware put in ``carrier`` (a scope or an environ)."""
    context = carrier.get(CONTEXT_KEY)
    if not isinstance(context, AuthContext):
        raise ConfigurationError("no authmw context: the app is not behind authmw's AuthMiddleware")
    return context


def guard_of(carrier: Mapping[str, Any], guard: Guard | None) -> Guard:
    """``guard`` if given, else the one the middleware put in ``carrier``."""
    found = guard if guard is not None else carrier.get(GUARD_KEY)
    if not isinstance(found, Guard):
        raise ConfigurationError("no authmw guard: pass guard= or put the app behind authmw's AuthMiddleware")
    return found


def decided(context: AuthContext, action: str, resource: str | None) -> bool:
    """Whether the middleware allowed ``action`` (on the route's ``resource`` template) for this request already:
    its route names them, and that decision was the last one made (a body action is decided after the route's)."""
    route, decision = context.route, context.decision
    return (
        route is not None
        and (route.action, route.resource) == (action, resource)
        and context.action == action
        and decision is not None
        and decision.allowed
        and context.error is None
    )


def authorize(
    guard: Guard, context: AuthContext, action: str, resource: str | None, *, method: str, path: str
) -> AuthContext:
    """Decide ``action`` for a checked request and audit it; returns the context narrowed to that action.

    A refusal is raised (as :meth:`Guard.authorize` does), except in dry-run mode, where it is logged and
    carried in the returned context's ``error``, and the request goes on.
    """
    try:
        decision = guard.authorize(context, action, resource)
    except AuthmwError as exc:
        refused = replace(context, action=action, resource=resource, decision=None)
        if guard.mode != "dry-run":
            exc.context = refused
            log_decision(refused, exc, method, path)
            raise
        refused = replace(refused, error=exc)
        log_decision(refused, None, method, path)
        return refused
    allowed = replace(context, action=action, resource=resource, decision=decision)
    log_decision(allowed, None, method, path)
    return allowed


def wrap_view(view: View, check: Callable[..., Any]) -> View:
    """``view`` (sync or async alike) preceded by ``check(*args)``: a result other than None answers instead."""
    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def checked_async(*args: Any, **kwargs: Any) -> Any:
            refused = check(*args)
            return refused if refused is not None else await view(*args, **kwargs)

        return cast("View", checked_async)

    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        refused = check(*args)
        return refused if refused is not None else view(*args, **kwargs)

    return cast("View", checked)
