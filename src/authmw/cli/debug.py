"""Debugging commands: ``verify-request``, ``explain --request`` and ``policy validate|check|lint``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

from authmw.cli._common import (
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_common,
    check_action,
    decision_report,
    emit,
    open_cli_store,
    parse_context,
    settings_of,
)
from authmw.errors import (
    ActionDenied,
    AuthenticationFailed,
    AuthmwError,
    ConfigurationError,
    InvalidPolicy,
    InvalidSecurityToken,
    NotFound,
)
from authmw.models import AccessKey, AuthContext, Request
from authmw.policy import Policy, PolicySet, RouteUse, lint, modelarts_actions, never_applies, parse_policy
from authmw.rawhttp import parse_raw_request

__all__ = [
    "COMMANDS",
    "add_explain_options",
    "explain_request",
    "refuse_request_options",
    "register_policy",
    "route_use",
    "warn_never_applies",
]


class _AnyKey:
    """Without ``--access-key`` the given secret is tried for whatever access key the request names."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def get_access_key(self, access_key: str) -> AccessKey:
        return AccessKey(access_key, self._secret)


class _NoTemporaryKeys:
    """Temporary credentials are validated by the security-token service, not by a store lookup."""

    def resolve(self, token: str, access_key: str) -> AccessKey:  # noqa: ARG002 - never accepted
        raise InvalidSecurityToken("security tokens are not checked against a store")


class _TrustedToken:
    """The CLI checks signatures only: a security token is accepted as is, with the given secret."""

    def __init__(self, secret: str, access_key: str | None) -> None:
        self._secret, self._access_key = secret, access_key

    def resolve(self, token: str, access_key: str) -> AccessKey:  # noqa: ARG002 - accepted as is
        if self._access_key is not None and access_key != self._access_key:
            raise InvalidSecurityToken("request names another access key")
        return AccessKey(access_key, self._secret, temporary=True)


def _printable(text: str) -> str:
    """Undecodable request bytes (kept as surrogates) shown as escapes rather than crashing the output."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _parse_time(value: str) -> float:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--at: not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _read(path: str, stdin: TextIO) -> bytes:
    if path == "-":
        return stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read().encode()
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _verify_request(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    from authmw.signing import Verifier  # on use: the signature schemes are this command's alone

    raw = _read(args.file, stdin)
    try:
        request = parse_raw_request(raw)
    except AuthmwError as exc:
        raise UsageError(f"not an HTTP request: {exc.detail}") from None
    at = _parse_time(args.at) if args.at else datetime.now(UTC).timestamp()
    if args.secret_key is None:
        if args.access_key:
            raise UsageError("--access-key goes with --secret-key; with a store the request names the key")
        with open_cli_store(args) as store:
            store.require_schema()
            verifier = Verifier(
                keys=store, clock=lambda: at, security_tokens=_NoTemporaryKeys(), max_body=max(len(request.body), 1)
            )
            result = verifier.inspect(request)
    else:
        keys = {args.access_key: args.secret_key} if args.access_key else _AnyKey(args.secret_key)
        verifier = Verifier(
            keys=keys,
            clock=lambda: at,
            security_tokens=_TrustedToken(args.secret_key, args.access_key),
            max_body=max(len(request.body), 1),
        )
        result = verifier.inspect(request)
    report: dict[str, Any] = {
        "valid": result.valid,
        "scheme": result.scheme,
        "access_key": result.access_key,
        "reason": result.reason,
        "canonical_request": result.canonical_request,
        "string_to_sign": result.string_to_sign,
    }
    if args.format == "json":
        stdout.write(json.dumps(report) + "\n")  # ASCII: undecodable request bytes survive any stdout encoding
    else:
        stdout.write(f"{'VALID' if result.valid else 'INVALID'}  scheme={result.scheme or '-'}  ")
        stdout.write(f"access_key={result.access_key or '-'}\n")
        if result.reason:
            stdout.write(f"reason: {result.reason}\n")
        if not result.valid and result.canonical_request:
            stdout.write("\n--- canonical request (as authmw computed it) ---\n")
            stdout.write(_printable(result.canonical_request) + "\n")
            stdout.write("--- string to sign ---\n" + _printable(result.string_to_sign) + "\n")
    return EXIT_OK if result.valid else EXIT_INVALID


def _read_policy(path: str) -> Policy:
    try:
        with open(path, "rb") as handle:
            return parse_policy(handle.read(), name=path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def route_use(args: argparse.Namespace) -> RouteUse | None:
    """What the configured route catalog (``--config``; default: the ModelArts preset) asks of policies, or None
    (with a line on stderr) when the configuration cannot be read: warnings are then left out, nothing fails."""
    from authmw.assembly import routes_of
    from authmw.routes import modelarts_inferred_actions, modelarts_routes
    from authmw.sts import ASSUME_ACTION

    try:
        catalog = routes_of(settings_of(args))
    except (UsageError, ConfigurationError) as exc:
        sys.stderr.write(f"warning: no route catalog ({exc}): whether statements can apply is not checked\n")
        return None
    actions = set(catalog.actions)
    inferred: frozenset[str] = frozenset()
    if set(modelarts_routes()) <= set(catalog.routes):
        actions.update(modelarts_actions())  # the preset's action catalog, routes or not (allowed_actions)
        inferred = modelarts_inferred_actions()
    # The security-token endpoint decides its own action on an agency URN.
    resourced = {ASSUME_ACTION} | {
        action
        for route in catalog.routes
        if route.resource is not None
        for action in (route.action, *(named for _field, named in route.body_actions))
        if action is not None
    }
    return RouteUse.of(actions, resourced, inferred)


def warn_never_applies(policy: Policy, usage: RouteUse | None, where: str) -> None:
    """One stderr line per statement of ``policy`` that can never apply to the route catalog (exit codes stay)."""
    for warning in never_applies(policy, usage) if usage is not None else ():
        sys.stderr.write(f"{where}: warning: statement {warning.statement}: {warning.message}\n")


def _policy_validate(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    problems: dict[str, list[str]] = {}
    usage = route_use(args)
    for path in args.files:
        try:
            warn_never_applies(_read_policy(path), usage, path)
            problems[path] = []
        except InvalidPolicy as exc:
            problems[path] = list(exc.problems)
            for problem in exc.problems:
                sys.stderr.write(f"{path}: {problem}\n")
    valid = not any(problems.values())
    if args.format == "json":
        stdout.write(json.dumps({"valid": valid, "problems": problems}) + "\n")
    else:
        for path, found in problems.items():
            stdout.write(f"{path}: {'valid' if not found else f'{len(found)} problem(s)'}\n")
    return EXIT_OK if valid else EXIT_USAGE


def _policy_check(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    try:
        policies = [_read_policy(path) for path in args.policy]
    except InvalidPolicy as exc:
        raise UsageError(str(exc)) from None
    context = parse_context(args.context)
    decision = PolicySet(policies, cache_size=0).decide(check_action(args.action), args.resource, context)
    report = decision_report(decision)
    stdout.write(json.dumps(report) + "\n")
    return EXIT_OK if decision.allowed else EXIT_INVALID


def _policy_lint(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    try:
        policies = [_read_policy(path) for path in args.files]
    except InvalidPolicy as exc:
        raise UsageError(str(exc)) from None
    usage = route_use(args)
    found = lint(policies, () if usage else modelarts_actions(), usage=usage)
    if args.format == "json":
        items = [{"policy": w.policy, "statement": w.statement, "message": w.message} for w in found]
        stdout.write(json.dumps({"warnings": items}) + "\n")
    else:
        for warning in found:
            stdout.write(f"{warning.policy}: statement {warning.statement}: {warning.message}\n")
    return EXIT_INVALID if found else EXIT_OK


_EXPLAIN_ORIGIN = "http://authmw.explain"  # the request is checked in-process; its Host is this one's


def add_explain_options(explain: argparse.ArgumentParser) -> None:
    """``authmw explain``'s options: one action (``--action``), or a whole request (``--request``)."""
    explain.add_argument("--user", required=True, metavar="U", help="the caller, a user of --domain")
    asked = explain.add_mutually_exclusive_group(required=True)
    asked.add_argument("--action", metavar="A", help="decide one action (service:resourceType:operation)")
    asked.add_argument(
        "--request",
        metavar="'METHOD /path'",
        help="run a whole request through the configured pipeline (--config): route, workspace, whitelists, "
        "policies, as the request signed by the user (or the agency session) would be",
    )
    explain.add_argument(
        "--workspace", metavar="W", help="workspace name or id (default: 0; with --request sent as X-Workspace-Id)"
    )
    explain.add_argument("--resource", metavar="URN", help="the resource (--action; a route gives its own)")
    explain.add_argument(
        "--context",
        action="append",
        metavar="KEY=VALUE",
        help="a condition key for the policies (repeatable; or a JSON object of them)",
    )
    explain.add_argument(
        "--source-ip", metavar="IP", help="--request: the client address (IP whitelists and g:SourceIp)"
    )
    explain.add_argument(
        "--agency",
        metavar="[DOMAIN/]NAME",
        help="--request: as a session of this agency (of DOMAIN, default --domain) that --user assumes",
    )
    explain.add_argument(
        "--header", action="append", default=[], metavar="NAME:VALUE", help="--request: a header (repeatable)"
    )
    explain.add_argument("--body", metavar="FILE", help="--request: the body, from FILE or - for stdin")


def explain_request(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    """``explain --request``: the request, signed with temporary credentials of the user (or of the agency it
    assumes, through the STS rule), checked by the guard the configuration builds: every step is the
    pipeline's own. ``--context`` keys are then laid over the request's facts and the actions decided again."""
    from authmw.assembly import open_guard, session_sealer
    from authmw.signing import sign_request
    from authmw.sts import assume

    if args.resource is not None:
        raise UsageError("--resource goes with --action; with --request the route gives the resource")
    method, target = _request_line(args.request)
    extra = parse_context(args.context)
    headers = dict(_header(text) for text in args.header)
    body = _read(args.body, stdin) if args.body else b""
    settings = settings_of(args)
    agency = _agency_of(args.agency, args.domain)
    with open_cli_store(args) as store:
        store.require_schema()
        user = store.find_user(args.user, domain=args.domain)
        if args.workspace is not None:
            headers["X-Workspace-Id"] = _workspace_id(store, args.workspace, args.domain)
        principal = store.principal(user.id)
        guard = open_guard(store, config=settings)
        context: AuthContext | None = None
        try:
            if principal is None:  # no credential of a disabled user verifies: what the pipeline answers
                raise AuthenticationFailed("the credential's user is unknown or disabled")
            session, token = assume(store, session_sealer(store), principal, agency=agency, source_ip=args.source_ip)
            signed = sign_request(
                method,
                _EXPLAIN_ORIGIN + target,
                headers,
                body,
                access_key=session.access_key,
                secret_key=session.secret_key,
                security_token=token,
            )
            sent = urlsplit(signed.url)
            request = Request.build(
                method, sent.path + (f"?{sent.query}" if sent.query else ""), signed.headers, body, args.source_ip
            )
            context = guard.check(request)
            error = context.error  # dry-run mode: what enforce would have refused
        except AuthmwError as exc:
            context, error = exc.context, exc
        decided = error is None or isinstance(error, ActionDenied)  # the pipeline reached the policies
        if extra and decided and context is not None and context.principal is not None:
            context, error = _decide_again(guard, context, extra)
    report = _request_report(args, method, target, context, error)
    emit(args, stdout, report, _request_text(report))
    return EXIT_OK if report["decision"] == "allow" else EXIT_INVALID


def refuse_request_options(args: argparse.Namespace) -> None:
    """``explain --action`` decides an action alone: options that only a request has are refused, not ignored."""
    given = [name for name in ("source_ip", "agency", "body") if getattr(args, name) is not None]
    given += ["header"] if args.header else []
    if given:
        names = ", ".join(f"--{name.replace('_', '-')}" for name in given)
        raise UsageError(f"{names}: only with --request")


def _request_line(text: str) -> tuple[str, str]:
    method, _, target = text.strip().partition(" ")
    target = target.strip()
    if not method.isalpha() or not method.isupper() or not target.startswith("/") or " " in target:
        raise UsageError(f"--request: expected 'METHOD /path[?query]', got {text!r}")
    return method, target


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or name.strip().lower() in ("authorization", "x-security-token", "x-sdk-date"):
        raise UsageError(f"--header: expected NAME:VALUE (not a credential or date header), got {text!r}")
    return name.strip(), value.strip()


def _agency_of(given: str | None, domain: str) -> tuple[str, str] | None:
    if given is None:
        return None
    owner, slash, name = given.rpartition("/")
    if not name:
        raise UsageError(f"--agency: expected [DOMAIN/]NAME, got {given!r}")
    return (owner if slash else domain), name


def _workspace_id(store: Any, given: str, domain: str) -> str:
    """A workspace named by name or id; one the store does not know is sent as given (the pipeline decides)."""
    try:
        return str(store.find_workspace(given, domain=domain).id)
    except NotFound:
        return given


def _decide_again(guard: Any, context: AuthContext, extra: dict[str, Any]) -> tuple[AuthContext, AuthmwError | None]:
    """Every action of the request decided again by the guard, with ``extra`` laid over the request's facts."""
    given = {key.lower() for key in extra}
    facts = {key: value for key, value in context.policy_context.items() if key.lower() not in given}
    overlaid = replace(context, policy_context={**facts, **extra})
    decided = overlaid
    for action in context.actions or ((context.action,) if context.action else ()):
        try:
            decision = guard.authorize(overlaid, action, context.resource)
        except ActionDenied as exc:
            return exc.context or overlaid, exc
        except ValueError as exc:  # a context value a condition cannot read
            raise UsageError(f"--context: {exc}") from None
        decided = replace(overlaid, action=action, decision=decision)
    return decided, None


def _request_report(
    args: argparse.Namespace, method: str, target: str, context: AuthContext | None, error: AuthmwError | None
) -> dict[str, Any]:
    decision = None if context is None else context.decision
    if error is not None:
        reason = error.detail
    elif decision is not None:
        reason = decision.reason
    else:
        reason = "the route needs no policy decision" if context is not None and context.route else "allowed"
    report: dict[str, Any] = {
        "request": f"{method} {target}",
        "user": args.user,
        "domain": args.domain,
        "agency": args.agency,
        "client": args.source_ip,
        "decision": "deny" if error is not None else "allow",
        "status": None if error is None else error.status,
        "error_code": None if error is None else error.code,
        "reason": reason,
        "route": None if context is None or context.route is None else context.route.name,
        "action": None if context is None else context.action,
        "actions": [] if context is None else list(context.actions),
        "resource": None if context is None else context.resource,
        "workspace": None if context is None else context.workspace_id,
        "project": None if context is None or context.project is None else context.project.id,
        "explicit": decision is not None and decision.explicit,
        "statement": None if decision is None else {"policy": decision.policy, "index": decision.statement},
        "conditions": {} if context is None else _plain_facts(context.policy_context),
    }
    return report


def _plain_facts(facts: Any) -> dict[str, Any]:
    """The condition keys as JSON values (a fact that is no JSON value is shown as text)."""
    return {
        key: value if isinstance(value, str | int | float | bool | list) else str(value) for key, value in facts.items()
    }


def _request_text(report: dict[str, Any]) -> str:
    def shown(value: Any) -> str:
        return "-" if value in (None, [], {}) else ", ".join(map(str, value)) if isinstance(value, list) else str(value)

    verdict = report["decision"].upper()
    if report["error_code"]:
        verdict += f"  {report['error_code']} ({report['status']})"
    statement = report["statement"]
    decided = (
        "-"
        if statement is None
        else f"{statement['policy']} statement {statement['index']}{' (explicit)' if report['explicit'] else ''}"
    )
    caller = f"{report['user']} of {report['domain']}" + (f", as agency {report['agency']}" if report["agency"] else "")
    lines = [
        f"{verdict}: {report['reason']}",
        f"request:    {report['request']}  (caller {caller}; client {shown(report['client'])})",
        f"route:      {shown(report['route'])}",
        f"action:     {shown(report['action'])}  (all: {shown(report['actions'])})",
        f"resource:   {shown(report['resource'])}",
        f"workspace:  {shown(report['workspace'])}  project: {shown(report['project'])}",
        f"decided by: {decided}",
        "conditions: " + (", ".join(f"{k}={v}" for k, v in sorted(report["conditions"].items())) or "-"),
    ]
    return "\n".join(lines) + "\n"


def _add_verify_request(commands: Any) -> None:
    from authmw.signing import SCHEMES  # on use: only this command's parser names them

    verify = commands.add_parser(
        "verify-request",
        help="check the signature of a raw HTTP request",
        description=(
            "Verify the AK/SK signature of a raw HTTP/1.1 request (request line, headers, blank line, body). "
            f"Schemes: {', '.join(sorted(SCHEMES))}. On a mismatch the canonical request and string to sign "
            "that authmw computed are shown, to diff against your client's. Security tokens are not validated "
            "here, only required to be signed (with --secret-key) or refused (with the store). Without "
            "--secret-key the access key's secret is looked up in the store. Exit 0 valid, 1 invalid, 2 unusable "
            "input."
        ),
    )
    verify.add_argument("--file", required=True, metavar="REQ", help="raw request file, or - for stdin")
    verify.add_argument("--secret-key", metavar="SK", help="secret key to verify with (else: look it up in --store)")
    verify.add_argument("--access-key", metavar="AK", help="only accept requests signed under this access key")
    verify.add_argument("--at", metavar="ISO8601", help="verification time (default: now); naive means UTC")
    add_common(verify)
    verify.set_defaults(handler=_verify_request)


def register_policy(policy_commands: Any) -> None:
    """Add ``validate``, ``check`` and ``lint`` to the ``policy`` command."""
    validate = policy_commands.add_parser(
        "validate",
        help="validate policy documents",
        description="Validate IAM policy documents (Version 1.1 or 5.0). Exit 0 if every document is valid, "
        "2 otherwise, with one line per problem on stderr. Statements of valid documents that can never apply "
        "to the route catalog (of --config; default: the ModelArts preset) are warned about on stderr.",
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="policy documents (JSON), one or more")
    add_common(validate)
    validate.set_defaults(handler=_policy_validate)
    check = policy_commands.add_parser(
        "check",
        help="decide an action against policies",
        description="Evaluate an action (and optional resource and request context) against zero or more "
        "policies; none means implicit deny. Prints JSON {decision, explicit, statement, reason}. Exit 0 "
        "allow, 1 deny, 2 invalid input.",
    )
    check.add_argument("--policy", action="append", default=[], metavar="FILE", help="a policy (repeatable)")
    check.add_argument("--action", required=True, metavar="ACTION", help="service:resourceType:operation")
    check.add_argument("--resource", metavar="URN", help="service:region:account:type:path")
    check.add_argument("--context", metavar="JSON", help='condition keys, e.g. {"g:UserName": "alice"}')
    add_common(check, formats=("json",))
    check.set_defaults(handler=_policy_check)
    linter = policy_commands.add_parser(
        "lint",
        help="warn about shadowed statements, impossible conditions and broad wildcards",
        description="Read the policies together (as one principal's set) and warn about Allow statements a "
        "Deny always overrides, conditions that can never hold, wildcard actions broader than needed, and "
        "statements that can never apply to the route catalog (of --config; default: the ModelArts preset): "
        "Action patterns matching no action, a Resource on actions no route gives a resource; and Action "
        "entries that rely on the preset's inferred actions (derived by authmw's naming rule where the ModelArts "
        "documentation names none). Exit 0 no warnings, 1 warnings, 2 invalid input.",
    )
    linter.add_argument("files", nargs="+", metavar="FILE", help="policy documents (JSON), one or more")
    add_common(linter)
    linter.set_defaults(handler=_policy_lint)


#: The command this module adds, with the function adding its parser (``policy validate|check|lint``: see
#: :func:`register_policy`).
COMMANDS = {"verify-request": _add_verify_request}
