"""The one error tree of authmw.

Every failure a client can cause is an :class:`AuthmwError` leaf with a stable ``code`` (documented in the
README), an HTTP ``status`` and a short generic ``message`` that is safe to send to the client. Details for
operators go in typed fields and never contain secrets, signatures or canonical requests.

::

    AuthmwError
    ├── BadRequest (400)
    │   ├── MalformedRequest            malformed_request
    │   ├── MultipleCredentials         multiple_credentials
    │   ├── MalformedChunkedBody        malformed_chunked_body
    │   ├── InvalidEncoding             invalid_encoding
    │   ├── AmbiguousPath               ambiguous_path
    │   ├── InvalidPathParameter        invalid_path_parameter  (a typed route parameter: {id:int}, {id:uuid})
    │   ├── MalformedBody               malformed_body
    │   ├── InvalidWorkspaceId          invalid_workspace_id
    │   ├── ConflictingWorkspace        conflicting_workspace
    │   ├── ConflictingProject          conflicting_project
    │   ├── InvalidDuration             invalid_duration  (temporary credentials)
    │   └── InvalidSessionPolicy        invalid_session_policy
    ├── AuthenticationFailed (401)
    │   ├── MissingCredentials          missing_credentials
    │   ├── MalformedAuthorization      malformed_authorization
    │   ├── UnsupportedScheme           unsupported_scheme
    │   ├── SchemeDisabled              scheme_disabled
    │   ├── MissingDate                 missing_date
    │   ├── BadDate                     bad_date
    │   ├── DateOutOfWindow             date_out_of_window
    │   ├── HeaderNotSigned             header_not_signed
    │   ├── SignedHeaderMissing         signed_header_missing
    │   ├── CredentialScopeMismatch     credential_scope_mismatch
    │   ├── BodyDigestMismatch          body_digest_mismatch
    │   ├── UnsignedPayloadRefused      unsigned_payload_refused
    │   ├── UnsupportedPayload          unsupported_payload
    │   ├── SignatureMismatch           signature_mismatch   (also for unknown access keys)
    │   ├── PresignedUrlExpired         presigned_url_expired
    │   ├── SecurityTokenRequired       security_token_required
    │   ├── InvalidSecurityToken        invalid_security_token  (malformed, tampered, unknown sealing key)
    │   ├── ExpiredSecurityToken        security_token_expired
    │   ├── SecurityTokenMismatch       security_token_mismatch  (the token of another access key)
    │   ├── InvalidToken                invalid_token
    │   ├── ExpiredToken                token_expired
    │   └── ReplayedRequest             replayed_request
    ├── Forbidden (403)
    │   ├── ActionDenied                action_denied
    │   ├── RouteNotAllowed             route_not_allowed
    │   ├── WorkspaceNotFound           workspace_not_found  (also another domain's workspace)
    │   ├── WorkspaceDenied             workspace_denied
    │   ├── ProjectNotFound             project_not_found
    │   ├── TokenScopeMismatch          token_scope_mismatch
    │   ├── AgencyNotTrusted            agency_not_trusted  (also an unknown agency)
    │   └── AddressNotAllowed           address_not_allowed
    ├── TooManyRequests (429)
    │   ├── TooManyAttempts             too_many_attempts  (password logins; with Retry-After)
    │   └── ReplayQuotaExceeded         replay_quota_exceeded  (one user's share of the replay guard)
    ├── RequestTimedOut (408)
    │   └── RequestTimeout              request_timeout  (the head or body was not received in time)
    ├── PayloadTooLarge (413)
    │   └── BodyTooLarge                body_too_large
    │       └── JsonBodyTooLarge        json_body_too_large  (a body the guard must parse: max_json_body, values)
    ├── BadGateway (502)
    │   └── UpstreamUnavailable         upstream_unavailable  (the sidecar's upstream did not answer)
    └── ServiceUnavailable (503)
        ├── ReplayCacheFull             replay_cache_full
        ├── StoreUnavailable            store_unavailable
        ├── SharedStateUnavailable      shared_state_unavailable  (Redis, holding the replay window and limits)
        ├── ServerBusy                  server_busy  (the budget of request-body bytes in memory is spent)
        ├── IssuerUnavailable           issuer_unavailable  (an external token issuer's keys, past their grace)
        └── LoginBusy                   login_busy  (password checks in flight at their cap; with Retry-After)

:class:`ConfigurationError` is separate: it is raised at start-up for invalid settings (and its subclass
:class:`InvalidPolicy` for a policy document that breaks the language rules, :class:`AddressInUse` for a listen
address another process holds), never per request. So is
:class:`ChangeRefused` (and :class:`NotFound`): the store refused an administrative change, which was not
applied at all.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

__all__ = [
    "ActionDenied",
    "AddressInUse",
    "AddressNotAllowed",
    "AdminChangeRefused",
    "AgencyNotTrusted",
    "AmbiguousPath",
    "AuthenticationFailed",
    "AuthmwError",
    "BadDate",
    "BadGateway",
    "BadRequest",
    "BodyDigestMismatch",
    "BodyTooLarge",
    "ChangeRefused",
    "ConfigurationError",
    "ConflictingProject",
    "ConflictingWorkspace",
    "CredentialScopeMismatch",
    "DateOutOfWindow",
    "ExpiredSecurityToken",
    "ExpiredToken",
    "Forbidden",
    "HeaderNotSigned",
    "InvalidDuration",
    "InvalidEncoding",
    "InvalidPathParameter",
    "InvalidPolicy",
    "InvalidSecurityToken",
    "InvalidSessionPolicy",
    "InvalidToken",
    "InvalidWorkspaceId",
    "IssuerUnavailable",
    "JsonBodyTooLarge",
    "LoginBusy",
    "MalformedAuthorization",
    "MalformedBody",
    "MalformedChunkedBody",
    "MalformedRequest",
    "MissingCredentials",
    "MissingDate",
    "MultipleCredentials",
    "NotFound",
    "PayloadTooLarge",
    "PresignedUrlExpired",
    "ProjectNotFound",
    "ReplayCacheFull",
    "ReplayQuotaExceeded",
    "ReplayedRequest",
    "RequestTimedOut",
    "RequestTimeout",
    "ResourceNotFound",
    "RouteNotAllowed",
    "SchemeDisabled",
    "SecurityTokenMismatch",
    "SecurityTokenRequired",
    "ServerBusy",
    "ServiceUnavailable",
    "SharedStateUnavailable",
    "SignatureMismatch",
    "SignedHeaderMissing",
    "StoreUnavailable",
    "TokenScopeMismatch",
    "TooManyAttempts",
    "TooManyRequests",
    "UnsignedPayloadRefused",
    "UnsupportedPayload",
    "UnsupportedScheme",
    "UpstreamUnavailable",
    "WorkspaceDenied",
    "WorkspaceNotFound",
    "all_error_classes",
    "render",
]


class ConfigurationError(ValueError):
    """Invalid authmw configuration, detected when a component is built."""


class InvalidPolicy(ConfigurationError):
    """A policy document breaks the policy language rules; ``problems`` names each one."""

    def __init__(self, name: str, problems: list[str]) -> None:
        super().__init__(f"{name}: " + "; ".join(problems))
        self.name = name
        self.problems = tuple(problems)


class AddressInUse(ConfigurationError):
    """The address a server was to listen on is taken (another process, or another authmw, holds it)."""

    def __init__(self, host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        super().__init__(f"address already in use: {shown}:{port}")
        self.host, self.port = host, port


class ChangeRefused(ValueError):
    """The store refused an administrative change (invalid value, name taken, limit reached); nothing changed."""


class NotFound(ChangeRefused):
    """A change names something the store does not hold."""


class AuthmwError(Exception):
    """Base of every per-request failure; ``code``, ``status`` and ``message`` are safe to show clients."""

    code: ClassVar[str] = "authmw_error"
    status: ClassVar[int] = 400
    message: ClassVar[str] = "request refused"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.message)
        #: Operator-facing explanation; never contains secrets or signatures.
        self.detail = detail or self.message
        #: The pipeline's partial ``AuthContext`` when :meth:`authmw.Guard.check` raised this (for the audit log).
        self.context: Any = None

    @property
    def headers(self) -> dict[str, str]:
        """Response headers that must accompany this error."""
        return {}

    def to_dict(self, request_id: str = "") -> dict[str, str]:
        """The documented error body."""
        return {"error_code": self.code, "error_msg": self.message, "request_id": request_id}


class BadRequest(AuthmwError):
    status = 400
    code = "bad_request"
    message = "malformed request"


class MalformedRequest(BadRequest):
    code = "malformed_request"


class MultipleCredentials(BadRequest):
    code = "multiple_credentials"
    message = "more than one credential in the request"


class MalformedChunkedBody(BadRequest):
    code = "malformed_chunked_body"
    message = "malformed aws-chunked body"


class InvalidEncoding(BadRequest):
    code = "invalid_encoding"
    message = "invalid percent-encoding or UTF-8 in the request"


class AmbiguousPath(BadRequest):
    code = "ambiguous_path"
    message = "ambiguous request path"


class InvalidPathParameter(BadRequest):
    code = "invalid_path_parameter"
    message = "invalid path parameter"


class MalformedBody(BadRequest):
    code = "malformed_body"
    message = "malformed JSON body"


class InvalidWorkspaceId(BadRequest):
    code = "invalid_workspace_id"
    message = "invalid workspace id"


class ConflictingWorkspace(BadRequest):
    code = "conflicting_workspace"
    message = "the request names more than one workspace"


class ConflictingProject(BadRequest):
    code = "conflicting_project"
    message = "the request names more than one project"


class InvalidDuration(BadRequest):
    code = "invalid_duration"
    message = "duration_seconds is out of range"


class InvalidSessionPolicy(BadRequest):
    code = "invalid_session_policy"
    message = "the session policy is not a valid policy document"


class AuthenticationFailed(AuthmwError):
    status = 401
    code = "authentication_failed"
    message = "authentication failed"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'SDK-HMAC-SHA256 realm="authmw"'}


class MissingCredentials(AuthenticationFailed):
    code = "missing_credentials"
    message = "authentication required"


class MalformedAuthorization(AuthenticationFailed):
    code = "malformed_authorization"
    message = "malformed authorization"


class UnsupportedScheme(AuthenticationFailed):
    code = "unsupported_scheme"
    message = "unsupported authorization scheme"


class SchemeDisabled(AuthenticationFailed):
    code = "scheme_disabled"
    message = "authorization scheme disabled"


class MissingDate(AuthenticationFailed):
    code = "missing_date"
    message = "request date missing"


class BadDate(AuthenticationFailed):
    code = "bad_date"
    message = "request date malformed"


class DateOutOfWindow(AuthenticationFailed):
    code = "date_out_of_window"
    message = "request date outside the allowed window"


class HeaderNotSigned(AuthenticationFailed):
    code = "header_not_signed"
    message = "a required header is not signed"


class SignedHeaderMissing(AuthenticationFailed):
    code = "signed_header_missing"
    message = "a signed header is missing from the request"


class CredentialScopeMismatch(AuthenticationFailed):
    code = "credential_scope_mismatch"
    message = "credential scope does not match the request"


class BodyDigestMismatch(AuthenticationFailed):
    code = "body_digest_mismatch"
    message = "body digest does not match the body"


class UnsignedPayloadRefused(AuthenticationFailed):
    code = "unsigned_payload_refused"
    message = "unsigned payloads are not accepted"


class UnsupportedPayload(AuthenticationFailed):
    code = "unsupported_payload"
    message = "unsupported payload signing mode"


class SignatureMismatch(AuthenticationFailed):
    code = "signature_mismatch"
    message = "signature does not match"


class PresignedUrlExpired(AuthenticationFailed):
    code = "presigned_url_expired"
    message = "presigned URL expired"


class SecurityTokenRequired(AuthenticationFailed):
    code = "security_token_required"
    message = "a signed security token is required"


class InvalidSecurityToken(AuthenticationFailed):
    code = "invalid_security_token"
    message = "invalid security token"


class ExpiredSecurityToken(AuthenticationFailed):
    code = "security_token_expired"
    message = "the security token has expired"


class SecurityTokenMismatch(AuthenticationFailed):
    code = "security_token_mismatch"
    message = "the security token belongs to another access key"


class InvalidToken(AuthenticationFailed):
    code = "invalid_token"
    message = "invalid token"


class ExpiredToken(AuthenticationFailed):
    code = "token_expired"
    message = "the token has expired"


class ReplayedRequest(AuthenticationFailed):
    code = "replayed_request"
    message = (
        "this signed request was already accepted: sign each request anew (identical requests signed within "
        "the same second need a signed header that differs, such as a nonce)"
    )


class AdminChangeRefused(BadRequest):
    """An administration API call the store refused (a name taken or invalid, a rule of the model); the detail,
    which names only what the caller sent, is the answer's message."""

    code = "change_refused"
    message = "the store refused the change"


class ResourceNotFound(AuthmwError):
    """An administration API call names something the caller's domain does not hold."""

    status = 404
    code = "not_found"
    message = "not found"


class Forbidden(AuthmwError):
    status = 403
    code = "forbidden"
    message = "access denied"


class ActionDenied(Forbidden):
    code = "action_denied"
    message = "the action is not allowed"


class RouteNotAllowed(Forbidden):
    code = "route_not_allowed"
    message = "no route allows this request"


class WorkspaceNotFound(Forbidden):
    code = "workspace_not_found"
    message = "workspace not found"


class WorkspaceDenied(Forbidden):
    code = "workspace_denied"
    message = "no access to this workspace"


class ProjectNotFound(Forbidden):
    code = "project_not_found"
    message = "project not found"


class AgencyNotTrusted(Forbidden):
    code = "agency_not_trusted"
    message = "the caller may not assume this agency"


class TokenScopeMismatch(Forbidden):
    code = "token_scope_mismatch"
    message = "the token is not scoped to this project"


class AddressNotAllowed(Forbidden):
    code = "address_not_allowed"
    message = "client address not allowed"


class TooManyRequests(AuthmwError):
    status = 429
    code = "too_many_requests"
    message = "too many requests, retry later"


class TooManyAttempts(TooManyRequests):
    code = "too_many_attempts"
    message = "too many failed logins, retry later"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"login attempts for this user or address are limited; retry in {retry_after} s")
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RequestTimedOut(AuthmwError):
    status = 408
    code = "request_timed_out"
    message = "request timed out"


class RequestTimeout(RequestTimedOut):
    code = "request_timeout"
    message = "the request was not received in time"


class ReplayQuotaExceeded(TooManyRequests):
    code = "replay_quota_exceeded"
    message = "too many signed requests from this user within the signature's validity window, retry later"


class PayloadTooLarge(AuthmwError):
    status = 413
    code = "payload_too_large"
    message = "payload too large"


class BodyTooLarge(PayloadTooLarge):
    code = "body_too_large"
    message = "body too large to verify"


class JsonBodyTooLarge(BodyTooLarge):
    code = "json_body_too_large"
    message = "body too large to read"


class BadGateway(AuthmwError):
    status = 502
    code = "bad_gateway"
    message = "bad gateway"


class UpstreamUnavailable(BadGateway):
    code = "upstream_unavailable"
    message = "the upstream service did not answer"


class ServiceUnavailable(AuthmwError):
    status = 503
    code = "service_unavailable"
    message = "service unavailable"


class ReplayCacheFull(ServiceUnavailable):
    code = "replay_cache_full"
    message = "too many requests in flight, retry later"


class StoreUnavailable(ServiceUnavailable):
    code = "store_unavailable"
    message = "identity store unavailable, retry later"


class SharedStateUnavailable(ServiceUnavailable):
    """The shared state (Redis) did not answer in time: what it guards (the replay window, the limits) is refused
    rather than checked by this process alone, unless the operator opted in to that."""

    code = "shared_state_unavailable"
    message = "shared state unavailable, retry later"

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class ServerBusy(ServiceUnavailable):
    code = "server_busy"
    message = "too many request bodies in flight, retry later"

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class IssuerUnavailable(ServiceUnavailable):
    code = "issuer_unavailable"
    message = "the token issuer's keys are unavailable, retry later"


class LoginBusy(ServiceUnavailable):
    """As many password checks as the process allows are running (each costs an scrypt: 128 MiB, CPU-bound)."""

    code = "login_busy"
    message = "too many logins in progress, retry later"

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(f"password checks in flight are at their cap; retry in {retry_after} s")
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def all_error_classes() -> list[type[AuthmwError]]:
    """Every concrete error class, for documentation and tests."""
    seen: list[type[AuthmwError]] = []
    stack: list[type[AuthmwError]] = [AuthmwError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(reversed(cls.__subclasses__()))
    return seen


def render(error: AuthmwError, request_id: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """The documented response for ``error``: status, headers and JSON body (generic message, no detail)."""
    body = json.dumps(error.to_dict(request_id), separators=(",", ":")).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("x-authmw-request-id", request_id),
        ("x-request-id", request_id),  # where the Huawei SDKs look for it
        ("cache-control", "no-store"),
        *((name.lower(), value) for name, value in error.headers.items()),
    ]
    return error.status, headers, body
