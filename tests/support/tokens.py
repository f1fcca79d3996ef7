"""A security-token resolver for tests: it knows exactly one token, bound to one access key."""

from __future__ import annotations

from dataclasses import dataclass, field

from authmw.errors import InvalidSecurityToken
from authmw.models import AccessKey


@dataclass(frozen=True)
class OneToken:
    token: str | None
    access_key: str
    secret_key: str = field(repr=False)

    def resolve(self, token: str, access_key: str) -> AccessKey:
        if token != self.token or access_key != self.access_key:
            raise InvalidSecurityToken("unknown token")
        return AccessKey(access_key, self.secret_key, temporary=True)
