"""The official Huawei Cloud SDK clients sending an IAM token: the SDKs sign with AK/SK only, so a test that
drives them with a token gives them credentials of the class their builder asks for (it checks the class
name) that put ``X-Auth-Token`` on each request instead of signing it."""

from __future__ import annotations

from typing import Any

from huaweicloudsdkcore.signer.signer import Signer  # type: ignore[import-untyped]


def token_credentials(base: type, token: str, scope_id: str) -> Any:
    """Credentials of the SDK class ``base`` (``BasicCredentials`` with a project id, ``GlobalCredentials`` with a
    domain id) that send ``token`` as ``X-Auth-Token``: no signature, no access key."""

    class Token(base):  # type: ignore[misc]  # the SDK is untyped
        def sign_request(self, request: Any) -> Any:
            request.header_params["X-Auth-Token"] = token
            Signer.process_request_uri(request)  # the query string, as the signer would have built it
            return request

    Token.__name__ = base.__name__  # the client builder accepts credentials by class name
    return Token("token-only", "token-only", scope_id)
