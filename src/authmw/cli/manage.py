"""The administrator's list, show, update and delete verbs: parse, call the store, print.

The rules (what may be deleted, what a delete takes along) live in the store; these handlers only name things.
Times (``*_at``) print as UTC ISO 8601.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, TextIO

from authmw.cli._common import EXIT_OK, UsageError, emit, open_cli_store, table_text
from authmw.models import WhitelistScope
from authmw.tokens import iso_time

__all__ = [
    "agency_delete",
    "agency_list",
    "agency_show",
    "agency_update",
    "create_private",
    "domain_delete",
    "domain_list",
    "domain_show",
    "group_delete",
    "group_list",
    "group_remove_user",
    "group_show",
    "key_list",
    "key_show",
    "keypair_delete",
    "keypair_list",
    "keypair_show",
    "policy_delete",
    "policy_detach",
    "policy_list",
    "policy_show",
    "policy_update",
    "project_delete",
    "project_list",
    "project_show",
    "read_password",
    "read_text",
    "user_delete",
    "user_show",
    "user_update",
    "view",
    "whitelist_clear",
    "whitelist_show",
    "whitelist_target",
    "workspace_delete",
    "workspace_grant",
    "workspace_list",
    "workspace_show",
    "workspace_update",
]


def view(record: Any) -> dict[str, Any]:
    """A store record as printed: its fields, times as ISO 8601 (UTC)."""
    data: dict[str, Any] = record.to_dict()
    for key, value in data.items():
        if key.endswith("_at") and isinstance(value, int):
            data[key] = iso_time(value, micros=False)
    return data


def _deleted(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "status": "deleted"}


def read_password(stdin: TextIO) -> str:
    """One line of standard input (``--password-stdin``, ``--secret-key-stdin``): secrets stay out of argv."""
    line = stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    if not password:
        raise UsageError("--password-stdin: no password on standard input")
    return password.removesuffix("\r")


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def create_private(path: str) -> TextIO:
    """A new file for a secret, readable by its owner only (mode 0600 from the start, whatever the umask); an
    existing file or a symbolic link is never written through."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UsageError(f"--out: {path} exists; refusing to overwrite it") from None
    except OSError as exc:
        raise UsageError(f"--out: cannot create {path}: {exc.strerror}") from None
    return os.fdopen(fd, "w", encoding="utf-8")


# -- domains and projects -----------------------------------------------------------------------------------


def domain_list(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        domains = store.list_domains()
    emit(args, stdout, [view(d) for d in domains])
    return EXIT_OK


def domain_show(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        summary = store.show_domain(args.name)
    emit(args, stdout, view(summary))
    return EXIT_OK


def domain_delete(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        summary = store.delete_domain(args.name)
    emit(args, stdout, _deleted({"id": summary.id, "name": summary.name}))
    return EXIT_OK


def project_list(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        projects = store.list_projects(domain=args.domain)
    emit(args, stdout, [view(p) for p in projects])
    return EXIT_OK


def project_show(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        project = store.find_project(args.name, domain=args.domain)
    emit(args, stdout, view(project))
    return EXIT_OK


def project_delete(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        project = store.delete_project(args.name, domain=args.domain)
    emit(args, stdout, _deleted({"id": project.id, "name": project.name}))
    return EXIT_OK


# -- users and groups ---------------------------------------------------------------------------------------


def user_show(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        user = store.show_user(args.name, domain=args.domain)
    emit(args, stdout, view(user))
    return EXIT_OK


def user_update(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    if args.enabled is None and not args.password_stdin:
        raise UsageError("nothing to change: give --enable, --disable or --password-stdin")
    password = read_password(stdin) if args.password_stdin else None
    with open_cli_store(args) as store:
        store.require_schema()
        store.update_user(args.name, domain=args.domain, enabled=args.enabled, password=password)
        user = store.show_user(args.name, domain=args.domain)
    emit(args, stdout, view(user))
    return EXIT_OK


def user_delete(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        user = store.delete_user(args.name, domain=args.domain)
    emit(args, stdout, _deleted({"id": user.id, "name": user.name, "domain": args.domain}))
    return EXIT_OK


def group_list(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        groups = store.list_groups(domain=args.domain)
    emit(args, stdout, [view(g) for g in groups])
    return EXIT_OK


def group_show(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        group = store.show_group(args.name, domain=args.domain)
    emit(args, stdout, view(group))
    return EXIT_OK


def group_remove_user(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        store.remove_user_from_group(args.group, args.user, domain=args.domain)
    emit(args, stdout, {"group": args.group, "user": args.user, "status": "removed"})
    return EXIT_OK


def group_delete(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        group = store.delete_group(args.name, domain=args.domain)
    emit(args, stdout, _deleted({"id": group.id, "name": group.name}))
    return EXIT_OK


# -- access keys --------------------------------------------------------------------------------------------


def key_list(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        keys = store.list_access_keys(args.user, domain=args.domain)
    emit(args, stdout, [view(key) for key in keys])
    return EXIT_OK


def key_show(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        key = store.show_access_key(args.access_key, domain=args.domain)
    emit(args, stdout, view(key))
    return EXIT_OK


# -- policies and agencies ----------------------------------------------------------------------------------


def _policy_view(policy: Any) -> dict[str, Any]:
    data = view(policy)
    data["system"] = policy.domain is None
    data["document"] = json.loads(policy.document)
    return data


def policy_list(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        policies = store.list_policies(domain=args.domain)
    rows = [_policy_view(p) for p in policies]
    if args.format == "json":
        emit(args, stdout, rows)
    else:
        emit(args, stdout, [{k: v for k, v in row.items() if k != "document"} for row in rows])
    return EXIT_OK


def policy_show(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        policy = _policy_view(store.show_policy(args.name, domain=args.domain))
    head = {k: v for k, v in policy.items() if k != "document"}
    text = None if args.format == "json" else table_text(head) + json.dumps(policy["document"], indent=2) + "\n"
    emit(args, stdout, policy, text)
    return EXIT_OK


def policy_update(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    document = read_text(args.file)
    with open_cli_store(args) as store:
        store.require_schema()
        store.update_policy(args.name, document, domain=args.domain)
        policy = _policy_view(store.show_policy(args.name, domain=args.domain))
    emit(args, stdout, {k: v for k, v in policy.items() if k != "document" or args.format == "json"})
    return EXIT_OK


def policy_detach(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        store.detach_policy(
            args.name, group=args.group, user=args.user, agency=args.agency, domain=args.domain, project=args.project
        )
    target = {"group": args.group} if args.group else {"user": args.user} if args.user else {"agency": args.agency}
    scope = {"project": args.project} if args.project else {}
    emit(args, stdout, {"policy": args.name, **target, **scope, "status": "detached"})
    return EXIT_OK


def policy_delete(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        policy = store.delete_policy(args.name, domain=args.domain, force=args.force)
    emit(args, stdout, _deleted({"id": policy.id, "name": policy.name}))
    return EXIT_OK


def _agency_view(agency: Any) -> dict[str, Any]:
    return {**view(agency), "policies": list(agency.policies)}


def agency_list(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        agencies = store.list_agencies(domain=args.domain)
    emit(args, stdout, [_agency_view(a) for a in agencies])
    return EXIT_OK


def agency_show(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        agency = store.show_agency(args.name, domain=args.domain)
    emit(args, stdout, _agency_view(agency))
    return EXIT_OK


def agency_update(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    if args.trust is None and args.max_duration is None:
        raise UsageError("nothing to change: give --trust or --max-duration")
    with open_cli_store(args) as store:
        store.require_schema()
        agency = store.update_agency(args.name, domain=args.domain, trust=args.trust, max_duration=args.max_duration)
    emit(args, stdout, _agency_view(agency))
    return EXIT_OK


def agency_delete(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        agency = store.delete_agency(args.name, domain=args.domain)
    emit(args, stdout, _deleted({"id": agency.id, "name": agency.name}))
    return EXIT_OK


# -- workspaces ---------------------------------------------------------------------------------------------


def _workspace_view(workspace: Any) -> dict[str, Any]:
    return {**view(workspace), "grants": list(workspace.grants)}


def workspace_list(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        workspaces = store.list_workspaces(domain=args.domain)
    emit(args, stdout, [_workspace_view(w) for w in workspaces])
    return EXIT_OK


def workspace_show(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        workspace = store.show_workspace(args.name, domain=args.domain)
    emit(args, stdout, _workspace_view(workspace))
    return EXIT_OK


def workspace_grant(revoke: bool) -> Any:
    def handler(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
        with open_cli_store(args) as store:
            store.require_schema()
            workspace = store.grant_workspace(
                args.name, domain=args.domain, users=args.user, groups=args.group, revoke=revoke
            )
        emit(args, stdout, _workspace_view(workspace))
        return EXIT_OK

    return handler


def workspace_update(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    if args.auth_type is None and args.owner is None and not args.no_owner:
        raise UsageError("nothing to change: give --auth-type, --owner or --no-owner")
    with open_cli_store(args) as store:
        store.require_schema()
        workspace = store.update_workspace(
            args.name, domain=args.domain, auth_type=args.auth_type, owner=args.owner, clear_owner=args.no_owner
        )
    emit(args, stdout, _workspace_view(workspace))
    return EXIT_OK


def workspace_delete(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        workspace = store.delete_workspace(args.name, domain=args.domain)
    emit(args, stdout, _deleted({"id": workspace.id, "name": workspace.name}))
    return EXIT_OK


# -- key pairs and whitelists -------------------------------------------------------------------------------


def _keypair_view(pair: Any) -> dict[str, Any]:
    data = view(pair)
    data["public_key"] = data["public_key"].strip()
    return data


def keypair_list(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args, master_key=False) as store:
        store.require_schema()
        pairs = store.keypairs(args.user, domain=args.domain)
    rows = [_keypair_view(p) for p in pairs]
    if args.format != "json":  # a public key line is too wide for a table; show prints it
        rows = [{k: v for k, v in row.items() if k != "public_key"} for row in rows]
    emit(args, stdout, rows)
    return EXIT_OK


def keypair_show(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args, master_key=False) as store:
        store.require_schema()
        pair = store.show_keypair(args.name, user=args.user, domain=args.domain)
    emit(args, stdout, _keypair_view(pair))
    return EXIT_OK


def keypair_delete(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        store.delete_keypair(args.name, user=args.user, domain=args.domain)
    emit(args, stdout, _deleted({"name": args.name, "user": args.user}))
    return EXIT_OK


def whitelist_target(args: argparse.Namespace) -> tuple[WhitelistScope, str]:
    """The one whitelist ``--workspace``, ``--user`` or ``--route`` names."""
    if args.workspace:
        return WhitelistScope.WORKSPACE, args.workspace
    if args.user:
        return WhitelistScope.USER, args.user
    return WhitelistScope.ROUTE, args.route


def _whitelist_report(args: argparse.Namespace, stdout: TextIO, scope: WhitelistScope, name: str, entries: Any) -> None:
    report = {"scope": scope.value, "name": name, "entries": list(entries)}
    text = None if args.format == "json" else f"{scope.value} {name}: {', '.join(entries) or 'all addresses allowed'}\n"
    emit(args, stdout, report, text)


def whitelist_show(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    scope, name = whitelist_target(args)
    with open_cli_store(args) as store:
        store.require_schema()
        whitelist = store.show_whitelist(scope, name, domain=args.domain)
    _whitelist_report(args, stdout, scope, name, whitelist.entries)
    return EXIT_OK


def whitelist_clear(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    scope, name = whitelist_target(args)
    with open_cli_store(args) as store:
        store.require_schema()
        whitelist = store.set_whitelist(scope, name, [], domain=args.domain)
    _whitelist_report(args, stdout, scope, name, whitelist.entries)
    return EXIT_OK
