"""A small ModelArts-like world in a real store, and apps that echo what authmw handed them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authmw.store import Store, open_store

DENY_POOLS = json.dumps(
    {
        "Version": "1.1",
        "Statement": [{"Effect": "Deny", "Action": ["modelarts:trainJob:delete"]}],
    }
)


@dataclass(frozen=True)
class Key:
    access: str
    secret: str


@dataclass(frozen=True)
class World:
    store: Store
    url: str
    key_file: str  # the master key file (AUTHMW_MASTER_KEY_FILE) a separate process needs
    project: str
    other_project: str
    internal_ws: str
    private_ws: str
    foreign_ws: str
    admin: Key
    scientist: Key
    outsider: Key
    stranger: Key
    walled: Key  # a scientist whose user whitelist admits only 192.0.2.0/24

    def key(self, name: str) -> Key:
        return {
            "admin": self.admin,
            "scientist": self.scientist,
            "outsider": self.outsider,
            "stranger": self.stranger,
            "walled": self.walled,
        }[name]


def build_world(directory: Path) -> World:
    url = f"sqlite:///{directory / 'authmw.db'}"
    store = open_store(url, create=True, environ={"AUTHMW_MASTER_KEY_FILE": str(directory / "authmw.key")})
    store.initialize()
    project = store.create_project("cn-north-4", region="cn-north-4").id
    store.create_domain("other")
    other_project = store.create_project("cn-north-4", domain="other", region="cn-north-4").id
    store.create_group("admin")
    store.create_group("developers")
    store.attach_policy("ModelArts CommonOperations", group="developers")
    store.create_policy("no-train-delete", DENY_POOLS)
    store.attach_policy("no-train-delete", group="developers")
    keys = {}
    for name, groups in (
        ("admin", ["admin"]),
        ("scientist", ["developers"]),
        ("outsider", []),
        ("walled", ["developers"]),
    ):
        store.create_user(name)
        for group in groups:
            store.add_user_to_group(group, name)
        created = store.create_access_key(name)
        keys[name] = Key(created.access, created.secret)
    store.attach_policy("ModelArts FullAccess", group="admin")
    store.create_user("stranger", domain="other")
    store.create_group("developers", domain="other")
    store.add_user_to_group("developers", "stranger", domain="other")
    store.attach_policy("ModelArts CommonOperations", group="developers", domain="other")
    created = store.create_access_key("stranger", domain="other")
    keys["stranger"] = Key(created.access, created.secret)
    internal = store.create_workspace("team-space", auth_type="INTERNAL", grant_users=["scientist"], owner="admin").id
    private = store.create_workspace("admin-only", auth_type="PRIVATE", owner="admin").id
    foreign = store.create_workspace("elsewhere", auth_type="PUBLIC", domain="other").id
    store.set_whitelist("user", "walled", ["192.0.2.0/24"])
    return World(
        store,
        url,
        str(directory / "authmw.key"),
        project,
        other_project,
        internal,
        private,
        foreign,
        keys["admin"],
        keys["scientist"],
        keys["outsider"],
        keys["stranger"],
        keys["walled"],
    )


def _facts_of(context: Any) -> dict[str, Any] | None:
    if context is None:
        return None
    return {
        "user": None if context.principal is None else context.principal.user_name,
        "workspace": context.workspace_id,
        "action": context.action,
        "method": None if context.auth_method is None else context.auth_method.value,
        "project": None if context.project is None else context.project.id,
        "agency": context.agency,
    }


async def whole_body(receive: Any) -> bytes:
    """An ASGI request's body, all its messages read (the test apps' one copy)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def echo_asgi(scope: Any, receive: Any, send: Any) -> None:
    """Answers 200 with what it received: headers, body length, and authmw's context (if any)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            user = dict(scope["headers"]).get(b"x-authmw-user-name", b"").decode()
            context = _facts_of(scope.get("authmw"))
            who = context["user"] if context else user
            await send({"type": "websocket.send", "text": f"{who}:{message.get('text')}"})
    body = await whole_body(receive)
    payload = {
        "path": scope["path"],
        "raw_path": (scope.get("raw_path") or b"").decode("latin-1"),
        "headers": {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
        "body_length": len(body),
        "authmw": _facts_of(scope.get("authmw")),
    }
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


def echo_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    payload = {
        "path": environ.get("PATH_INFO"),
        "headers": headers,
        "body_length": len(body),
        "authmw": _facts_of(environ.get("authmw")),
    }
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(payload).encode()]
