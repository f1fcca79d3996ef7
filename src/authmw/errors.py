"""The one error tree of authmw.

Every failure a client can cause is an :class:`AuthmwError` leaf with a stable ``code`` (documented in the
README), an HTTP ``status`` and a short generic ``message`` that is safe to send to the client. Details for
operators go in typed fields and never contain secrets, signatures or canonical requests.

::

    AuthmwError
    ├── BadRequest (400)
    │   ├── MalformedRequest            malformed_request
    │   ├── MultipleCredentials         multiple_credentials
    │   └── MalformedChunkedBody        malformed_chunked_body
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
    │   ├── InvalidSecurityToken        invalid_security_token
    │   └── ReplayedRequest             replayed_request
    ├── PayloadTooLarge (413)
    │   └── BodyTooLarge                body_too_large
    └── ServiceUnavailable (503)
        ├── ReplayCacheFull             replay_cache_full
        └── StoreUnavailable            store_unavailable

:class:`ConfigurationError` is separate: it is raised at start-up for invalid settings (and its subclass
:class:`InvalidPolicy` for a policy document that breaks the language rules), never per request. So is
:class:`ChangeRefused` (and :class:`NotFound`): the store refused an administrative change, which was not
applied at all.
"""

from __future__ import annotations

from typing import ClassVar


class ConfigurationError(ValueError):
    """Invalid authmw configuration, detected when a component is built."""


class InvalidPolicy(ConfigurationError):
    """A policy document breaks the policy language rules; ``problems`` names each one."""

    def __init__(self, name: str, problems: list[str]) -> None:
        super().__init__(f"{name}: " + "; ".join(problems))
        self.name = name
        self.problems = tuple(problems)


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

    @property
    def headers(self) -> dict[str, str]:
        """Response headers that must accompany this error."""
        return {}

    def to_dict(self, request_id: str = "") -> dict[str, str]:
        """The SPEC §9 error body."""
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


class ReplayedRequest(AuthenticationFailed):
    code = "replayed_request"
    message = "request already seen"


class PayloadTooLarge(AuthmwError):
    status = 413
    code = "payload_too_large"
    message = "payload too large"


class BodyTooLarge(PayloadTooLarge):
    code = "body_too_large"
    message = "body too large to verify"


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


def all_error_classes() -> list[type[AuthmwError]]:
    """Every concrete error class, for documentation and tests."""
    seen: list[type[AuthmwError]] = []
    stack: list[type[AuthmwError]] = [AuthmwError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(reversed(cls.__subclasses__()))
    return seen
