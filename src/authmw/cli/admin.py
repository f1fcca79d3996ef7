"""Store administration commands: init, migrate, identities, keys, policies, workspaces, export."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from authmw.cli import manage
from authmw.cli._common import (
    DOMAIN_ENV,
    EXIT_INVALID,
    EXIT_OK,
    UsageError,
    add_common,
    check_action,
    decision_report,
    emit,
    open_cli_store,
    parse_context,
    settings_of,
)
from authmw.cli.debug import (
    add_explain_options,
    explain_request,
    refuse_request_options,
    route_use,
    warn_never_applies,
)
from authmw.cli.ssh import expiry
from authmw.errors import ChangeRefused, ConfigurationError
from authmw.models import WhitelistScope
from authmw.policy import parse_policy
from authmw.sessions import DEFAULT_DURATION, MAX_DURATION, MIN_DURATION
from authmw.tokens import TOKEN_ALGORITHMS
from authmw.workspaces import DEFAULT_WORKSPACE_ID, can_access_workspace

__all__ = ["COMMANDS", "register_policy"]

PASSPHRASE_ENV = "AUTHMW_EXPORT_PASSPHRASE"
_DURATIONS = f"{MIN_DURATION}-{MAX_DURATION}"


def _init(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args, create=True) as store:
        report = store.initialize()
        report["master_key"] = str(store.keyring.path) if store.keyring.path else "AUTHMW_MASTER_KEY"
    emit(args, stdout, report, f"store ready (schema {report['schema_to']}); master key: {report['master_key']}\n")
    return EXIT_OK


def _migrate(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        start, end = store.migrate()
    emit(args, stdout, {"schema_from": start, "schema_to": end}, f"schema {start} -> {end}\n")
    return EXIT_OK


def _domain_create(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        domain = store.create_domain(args.name)
    emit(args, stdout, {"id": domain.id, "name": domain.name})
    return EXIT_OK


def _project_create(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        project = store.create_project(args.name, domain=args.domain, region=args.region)
    emit(args, stdout, {"id": project.id, "name": project.name})
    return EXIT_OK


def _user_create(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    password = manage.read_password(stdin) if args.password_stdin else None
    with open_cli_store(args) as store:
        store.require_schema()
        user = store.create_user(args.name, domain=args.domain, password=password)
    emit(args, stdout, _user_view(user, args.domain))
    return EXIT_OK


def _user_view(user: Any, domain: str) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "domain": domain, "enabled": user.enabled}


def _user_enable(enabled: bool) -> Any:
    def handler(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
        with open_cli_store(args) as store:
            store.require_schema()
            user = store.set_user_enabled(args.name, enabled, domain=args.domain)
        emit(args, stdout, _user_view(user, args.domain))
        return EXIT_OK

    return handler


def _user_list(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        users = store.list_users(domain=args.domain)
        domains = {d.id: d.name for d in store.list_domains()}
    emit(args, stdout, [_user_view(u, domains[u.domain_id]) for u in users])
    return EXIT_OK


def _group_create(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        group = store.create_group(args.name, domain=args.domain)
    emit(args, stdout, {"id": group.id, "name": group.name})
    return EXIT_OK


def _group_add_user(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        store.add_user_to_group(args.group, args.user, domain=args.domain)
    emit(args, stdout, {"group": args.group, "user": args.user})
    return EXIT_OK


def _key_create(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    secret = args.secret_key
    if args.secret_key_stdin:
        if secret is not None:
            raise UsageError("--secret-key and --secret-key-stdin exclude each other")
        secret = manage.read_password(stdin)
    with open_cli_store(args) as store:
        store.require_schema()
        key = store.create_access_key(args.user, domain=args.domain, access_key=args.access_key, secret_key=secret)
    emit(args, stdout, key.to_dict())
    return EXIT_OK


def _key_status(active: bool) -> Any:
    def handler(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
        with open_cli_store(args) as store:
            store.require_schema()
            info = store.set_access_key_status(args.access_key, active, domain=args.domain)
        emit(args, stdout, manage.view(info))
        return EXIT_OK

    return handler


def _key_delete(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        info = store.delete_access_key(args.access_key, domain=args.domain)
    emit(args, stdout, {"access": info.access, "user": info.user, "status": "deleted"})
    return EXIT_OK


def _policy_create(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    try:
        document = Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    with open_cli_store(args) as store:
        store.require_schema()
        policy = store.create_policy(args.name, document, domain=args.domain)
    emit(args, stdout, {"id": policy.id, "name": policy.name})
    warn_never_applies(parse_policy(document, name=args.name), route_use(args), f"policy {args.name!r}")
    return EXIT_OK


def _policy_attach(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        store.attach_policy(
            args.name, group=args.group, user=args.user, agency=args.agency, domain=args.domain, project=args.project
        )
    target = {"group": args.group} if args.group else {"user": args.user} if args.user else {"agency": args.agency}
    emit(args, stdout, {"policy": args.name, **target, **({"project": args.project} if args.project else {})})
    return EXIT_OK


def _agency_create(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        agency = store.create_agency(
            args.name, trust=args.trust, domain=args.domain, policies=args.policy, max_duration=args.max_duration
        )
    emit(args, stdout, {**agency.to_dict(), "policies": list(agency.policies)})
    return EXIT_OK


def _agency_assume(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    from authmw.assembly import session_sealer
    from authmw.errors import AuthmwError
    from authmw.sts import assume
    from authmw.tokens import iso_time

    policy = None
    if args.policy_file is not None:
        try:
            policy = json.dumps(json.loads(Path(args.policy_file).read_text(encoding="utf-8")), separators=(",", ":"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise UsageError(f"cannot read {args.policy_file}: {getattr(exc, 'strerror', None) or exc}") from None
    with open_cli_store(args) as store:
        store.require_schema()
        caller_domain = args.caller_domain or args.domain
        user = store.find_user(args.user, domain=caller_domain)
        principal = store.principal(user.id)
        if principal is None:
            raise ChangeRefused(f"user {args.user!r} is disabled")
        try:
            session, token = assume(
                store,
                session_sealer(store),
                principal,
                agency=(args.domain, args.name),
                duration=args.duration,
                policy=policy,
            )
        except AuthmwError as exc:
            raise ChangeRefused(f"{exc.code}: {exc.detail}") from None
    emit(
        args,
        stdout,
        {
            "access": session.access_key,
            "secret": session.secret_key,
            "securitytoken": token,
            "expires_at": iso_time(session.expires_at),
        },
    )
    return EXIT_OK


def _sealing_key_rotate(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        kid, retired = store.rotate_sealing_key()
    emit(args, stdout, {"kid": kid, "retired": retired})
    return EXIT_OK


def _workspace_create(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        workspace = store.create_workspace(
            args.name,
            domain=args.domain,
            auth_type=args.auth_type,
            owner=args.owner,
            grant_users=args.grant,
            grant_groups=args.grant_group,
        )
    emit(args, stdout, {"id": workspace.id, "name": workspace.name, "auth_type": workspace.auth_type})
    return EXIT_OK


def _token_create(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    from authmw.tokens import TokenSigner, iso_time

    with open_cli_store(args) as store:
        store.require_schema()
        user = store.find_user(args.user, domain=args.domain)
        if not user.enabled:
            raise ChangeRefused(f"user {args.user!r} is disabled")
        scope = {}
        if args.project is not None:
            project = store.find_project(args.project, domain=args.domain)
            scope = {"project_id": project.id, "project_name": project.name}
        try:
            signer = TokenSigner(*store.token_signing_key(args.algorithm), algorithm=args.algorithm, ttl=args.ttl)
        except ConfigurationError as exc:
            raise UsageError(f"--ttl: {exc}") from None
        changed = store.show_user(user.name, domain=args.domain).password_changed_at
        token, claims = signer.issue(
            user_id=user.id,
            user_name=user.name,
            domain_id=user.domain_id,
            domain_name=args.domain,
            not_before=changed,
            **scope,
        )
    expires = iso_time(claims.expires_at)
    if args.format == "json":
        emit(args, stdout, {"token": token, "expires_at": expires, "user": user.name, "project": claims.project_id})
    else:
        stdout.write(token + "\n")  # alone on stdout, for X-Auth-Token: $(authmw token create --user U)
    return EXIT_OK


def _signing_key_rotate(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args) as store:
        store.require_schema()
        kid, retired = store.rotate_signing_key(args.algorithm)
    emit(args, stdout, {"kid": kid, "retired": retired})
    return EXIT_OK


def _keypair_create(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    # --out is created first: a file that cannot be created must not leave a stored pair whose private key is lost.
    out = None if args.out is None else manage.create_private(args.out)
    try:
        with open_cli_store(args) as store:
            store.require_schema()
            pair = store.create_keypair(
                args.name, user=args.user, domain=args.domain, key_type=args.type, expires_at=args.expires
            )
    except BaseException:
        if out is not None:
            out.close()
            os.unlink(args.out)
        raise
    if out is not None:
        with out:
            out.write(pair.private_key)
        emit(args, stdout, {**{k: v for k, v in pair.to_dict().items() if k != "private_key"}, "out": args.out})
    elif args.format == "json":
        emit(args, stdout, pair.to_dict())
    else:
        # The private key alone on stdout, so `> key.pem` saves it; it is never shown again.
        stdout.write(pair.private_key)
        sys.stderr.write(f"key pair {pair.name}: {pair.fingerprint} (the private key is not stored)\n")
    return EXIT_OK


def _keypair_import(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    try:
        text = Path(args.public_key_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {args.public_key_file}: {getattr(exc, 'strerror', None) or exc}") from None
    with open_cli_store(args) as store:
        store.require_schema()
        pair = store.import_keypair(
            args.name, user=args.user, public_key=text, domain=args.domain, expires_at=args.expires
        )
    emit(args, stdout, pair.to_dict())
    return EXIT_OK


def _keypair_authorized_keys(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    with open_cli_store(args, master_key=False) as store:  # public keys only: sshd's host holds no master key
        store.require_schema()
        text = store.authorized_keys(args.user, domain=args.domain)
    emit(args, stdout, {"user": args.user, "authorized_keys": text}, text)
    return EXIT_OK


def _whitelist_set(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    scope, name = (
        (WhitelistScope.WORKSPACE, args.workspace)
        if args.workspace
        else (WhitelistScope.USER, args.user)
        if args.user
        else (WhitelistScope.ROUTE, args.route)
    )
    if scope is WhitelistScope.ROUTE and args.addresses and not args.unchecked_route:
        _check_route_name(args, name)
    with open_cli_store(args) as store:
        store.require_schema()
        whitelist = store.set_whitelist(scope, name, args.addresses, domain=args.domain)
    report = {"scope": scope.value, "name": name, "entries": list(whitelist.entries)}
    emit(args, stdout, report, f"{scope.value} {name}: {', '.join(whitelist.entries) or 'all addresses allowed'}\n")
    return EXIT_OK


def _check_route_name(args: argparse.Namespace, name: str) -> None:
    """The guard names a route by ``METHOD /template`` or by an action it decides (the route's or a body
    field's); a whitelist under any other name would restrict nothing, so it is refused. The catalog is the
    deployment's: the presets in force and the configured routes (``--config``)."""
    from authmw.assembly import routes_of  # deferred: only this command needs the route catalog

    try:
        catalog = routes_of(settings_of(args))
    except ConfigurationError as exc:
        raise UsageError(f"--route: the configured routes are invalid: {exc}") from None
    if name not in catalog.actions and name not in {route.name for route in catalog.routes}:
        raise UsageError(
            f"--route: {name!r} is neither an action of the route catalog nor a route ('METHOD /path/template' "
            "as configured); routes declared in code: --unchecked-route"
        )


def _passphrase(args: argparse.Namespace) -> str | None:
    if args.passphrase_file:
        try:
            text = Path(args.passphrase_file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {args.passphrase_file}: {getattr(exc, 'strerror', None) or exc}") from None
    else:
        text = os.environ.get(PASSPHRASE_ENV, "")
    if text and len(text) < 12:
        raise UsageError("the export passphrase needs at least 12 characters")
    return text or None


def _export(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    from authmw.store import exportfile
    from authmw.store.transfer import export_store

    passphrase = _passphrase(args)
    if args.include_secrets and passphrase is None:
        raise UsageError(f"--include-secrets needs a passphrase: --passphrase-file F or ${PASSPHRASE_ENV}")
    with open_cli_store(args) as store:
        store.require_schema()
        document = export_store(store, passphrase=passphrase if args.include_secrets else None)
    stdout.write(json.dumps(document) + "\n" if args.format == "json" else exportfile.dumps(document))
    return EXIT_OK


def _import(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    from authmw.store import exportfile
    from authmw.store.transfer import import_store

    try:
        text = stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        document = exportfile.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {args.file}: {getattr(exc, 'strerror', None) or exc}") from None
    except exportfile.ExportFileError as exc:
        raise UsageError(f"{args.file}: {exc}") from None
    with open_cli_store(args) as store:
        store.require_schema()
        counts = import_store(store, document, passphrase=_passphrase(args), replace=args.replace)
    emit(args, stdout, counts, "imported " + ", ".join(f"{n} {section}" for section, n in counts.items() if n) + "\n")
    return EXIT_OK


def _master_key_rotate(args: argparse.Namespace, _stdin: TextIO, stdout: TextIO) -> int:
    from authmw.store.secrets import key_file_lock, key_id_of, new_master_key, read_key_file, write_key_file

    with open_cli_store(args) as store:
        store.require_schema()
        ring = store.keyring
        if ring.path is None:
            raise UsageError(
                "the master key comes from AUTHMW_MASTER_KEY: rotation rewrites a key file, use AUTHMW_MASTER_KEY_FILE"
            )
        with key_file_lock(ring.path):  # one rotation at a time
            current = read_key_file(ring.path)
            ring.replace(current)
            store.check_keyring()
            key = new_master_key()
            # 1. the file (durably) knows the new key and the old, so every process opens both meanwhile;
            write_key_file(ring.path, [key, *current])
            ring.replace([key, *current])
            # 2. one transaction re-seals everything and records the new key, which writers then follow;
            count = store.reseal_all(key_id_of(key))
            # 3. only then are the retired keys dropped.
            write_key_file(ring.path, [key])
            ring.replace([key])
    report = {"resealed": count, "key_id": ring.sealing_key_id, "key_file": str(ring.path)}
    emit(args, stdout, report, f"re-sealed {count} secrets under master key {ring.sealing_key_id}\n")
    return EXIT_OK


def _explain(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    if args.request is not None:
        return explain_request(args, stdin, stdout)
    refuse_request_options(args)
    context = parse_context(args.context)
    check_action(args.action)
    with open_cli_store(args) as store:
        store.require_schema()
        user = store.find_user(args.user, domain=args.domain)
        principal = store.principal(user.id)
        workspace = store.find_workspace(args.workspace or DEFAULT_WORKSPACE_ID, domain=args.domain)
    report: dict[str, Any] = {"user": args.user, "action": args.action, "workspace": workspace.id}
    if principal is None:
        report.update(decision="deny", explicit=False, statement=None, reason="user is disabled")
    elif not can_access_workspace(principal, workspace):
        reason = f"workspace {workspace.name} ({workspace.auth_type.value}) is not open to this user"
        report.update(decision="deny", explicit=False, statement=None, reason=reason)
    else:
        base = {
            "g:UserId": principal.user_id,
            "g:UserName": principal.user_name,
            "g:DomainName": principal.domain_name,
            "modelarts:workspaceId": workspace.id,
        }
        base = {k: v for k, v in base.items() if k.lower() not in {key.lower() for key in context}}
        try:
            decision = principal.policies.decide(args.action, args.resource, {**base, **context})
        except ValueError as exc:
            raise UsageError(f"--context: {exc}") from None
        report.update(decision_report(decision))
    emit(args, stdout, report, f"{report['decision'].upper()}: {report['reason']}\n")
    return EXIT_OK if report["decision"] == "allow" else EXIT_INVALID


#: What a workspace's access type means (``--auth-type``).
_AUTH_TYPES = (
    "PUBLIC: every user of the domain; PRIVATE: its owner and the domain's administrators; INTERNAL: those and the "
    "granted users and groups"
)


def _with_domain(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(DOMAIN_ENV) or "default"
    parser.add_argument(
        "--domain", default=default, metavar="D", help=f"the domain (env {DOMAIN_ENV}; default: {default})"
    )


def _command(commands: Any, name: str, handler: Any, help_text: str, *, domain: bool = True) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=help_text)
    add_common(parser, formats=("table", "json"))
    if domain:
        _with_domain(parser)
    parser.set_defaults(handler=handler)
    return parser


def _key_command(commands: Any, name: str, handler: Any, help_text: str) -> None:
    """A verb on one access key: key ids are unique in the store, so ``--domain`` only narrows (none: any)."""
    parser = _command(commands, name, handler, help_text, domain=False)
    parser.add_argument("access_key", metavar="AK", help="the access key id")
    default = os.environ.get(DOMAIN_ENV) or None
    parser.add_argument(
        "--domain",
        default=default,
        metavar="D",
        help=f"only a key of a user of this domain (env {DOMAIN_ENV}; default: {default or 'any domain'})",
    )


def _named(commands: Any, name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
    parser = _command(commands, name, handler, help_text)
    _name(parser)
    return parser


#: How each kind of entity is named on the command line, when not by its name in --domain alone.
_NAMED_BY = {
    "domain": "the domain's name",
    "project": "the project's name or id in --domain",
    "workspace": "the workspace's name or id in --domain",
    "policy": "the policy's name: one of --domain's, or a system policy's",
}


def _name(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The entity the verb acts on (``authmw user show NAME``: a user), as ``_NAMED_BY`` names it."""
    noun = parser.prog.split()[1]  # "authmw user show" -> "user"
    parser.add_argument("name", metavar="NAME", help=_NAMED_BY.get(noun, f"the {noun}'s name in --domain"))
    return parser


def _user(parser: argparse.ArgumentParser, *, option: bool = False, text: str = "the user's name in --domain") -> None:
    """The user a verb acts for: ``USER`` or ``--user U``."""
    if option:
        parser.add_argument("--user", required=True, metavar="U", help=text)
    else:
        parser.add_argument("user", metavar="USER", help=text)


def _one_target(parser: argparse.ArgumentParser, *kinds: str) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    for kind in kinds:
        target.add_argument(f"--{kind}", metavar=kind[0].upper(), help=f"the {kind}'s name in --domain")


def _project_scope(parser: argparse.ArgumentParser, meaning: str) -> None:
    parser.add_argument("--project", metavar="P", help=f"a project's name or id in --domain: {meaning}")


def _whitelist_target(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--workspace", metavar="W", help="workspace name or id")
    target.add_argument("--user", metavar="U", help="the user's name in --domain")
    target.add_argument("--route", metavar="R", help="an action or 'METHOD /path/template' of the route catalog")


def _group_of(commands: Any, name: str, help_text: str) -> Any:
    from authmw.cli._common import Parser

    parser = commands.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest=f"{name}_command", required=True, parser_class=Parser)


def _add_init(commands: Any) -> None:
    _command(
        commands,
        "init",
        _init,
        "create or migrate the store; create the default domain, workspace 0, the master key file if absent "
        "(mode 0600) and a token signing key",
        domain=False,
    )


def _add_migrate(commands: Any) -> None:
    _command(commands, "migrate", _migrate, "apply pending schema migrations", domain=False)


def _add_domain(commands: Any) -> None:
    domain = _group_of(commands, "domain", "domains (accounts)")
    _name(_command(domain, "create", _domain_create, "create a domain", domain=False))
    _command(domain, "list", manage.domain_list, "list domains", domain=False)
    _name(_command(domain, "show", manage.domain_show, "show a domain and what it holds", domain=False))
    _name(
        _command(
            domain,
            "delete",
            manage.domain_delete,
            "delete an empty domain (refused while it holds anything, is trusted by an agency, or is 'default')",
            domain=False,
        )
    )


def _add_project(commands: Any) -> None:
    project = _group_of(commands, "project", "projects (region-scoped)")
    create = _command(project, "create", _project_create, "create a project in a domain")
    create.add_argument("name", metavar="NAME", help="the new project's name, e.g. cn-north-4_dev")
    create.add_argument("--region", metavar="R", help="region (default: the name up to its first _)")
    _command(project, "list", manage.project_list, "list the domain's projects")
    _named(project, "show", manage.project_show, "show a project (by name or id)")
    _named(project, "delete", manage.project_delete, "delete a project; tokens scoped to it stop working")


def _add_user(commands: Any) -> None:
    user = _group_of(commands, "user", "IAM users")
    create = _command(user, "create", _user_create, "create a user")
    create.add_argument("name", metavar="NAME", help="the new user's name (unique in --domain)")
    create.add_argument("--password-stdin", action="store_true", help="read a password (8-128 chars) from stdin")
    _named(user, "disable", _user_enable(False), "disable a user")
    _named(user, "enable", _user_enable(True), "enable a user")
    listing = _command(user, "list", _user_list, "list users (of every domain unless --domain)")
    listing.set_defaults(domain=os.environ.get(DOMAIN_ENV) or None)
    _named(user, "show", manage.user_show, "show a user: groups, policies, keys, key pairs")
    update = _named(user, "update", manage.user_update, "enable or disable a user and/or set its password")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_const", const=True, default=None, help="enable it")
    state.add_argument(
        "--disable", dest="enabled", action="store_const", const=False, help="disable it: its keys and tokens stop"
    )
    update.add_argument("--password-stdin", action="store_true", help="read the new password (8-128 chars) from stdin")
    _named(
        user,
        "delete",
        manage.user_delete,
        "delete a user with its keys, key pairs, memberships, attachments, grants and whitelist "
        "(refused while it owns a workspace)",
    )


def _add_group(commands: Any) -> None:
    group = _group_of(commands, "group", "user groups")
    _named(group, "create", _group_create, "create a group")
    add = _command(group, "add-user", _group_add_user, "add a user to a group")
    add.add_argument("group", metavar="GROUP", help="the group's name in --domain")
    _user(add)
    _command(group, "list", manage.group_list, "list the domain's groups with their members")
    _named(group, "show", manage.group_show, "show a group: members and policies")
    remove = _command(group, "remove-user", manage.group_remove_user, "remove a user from a group")
    remove.add_argument("group", metavar="GROUP", help="the group's name in --domain")
    _user(remove)
    _named(group, "delete", manage.group_delete, "delete a group with its memberships, attachments and grants")


def _add_key(commands: Any) -> None:
    key = _group_of(commands, "key", "permanent access keys (AK/SK), at most 2 per user")
    create = _command(key, "create", _key_create, "create an access key; the secret is shown this once")
    _user(create)
    create.add_argument("--access-key", metavar="AK", help="use this access key id (with --secret-key)")
    create.add_argument("--secret-key", metavar="SK", help="use this secret (with --access-key)")
    create.add_argument(
        "--secret-key-stdin", action="store_true", help="read the secret from stdin (kept out of the process list)"
    )
    for name, handler, text in (
        ("disable", _key_status(False), "make a key inactive"),
        ("enable", _key_status(True), "make a key active again"),
        ("delete", _key_delete, "delete a key for good"),
        ("show", manage.key_show, "show a key (never its secret), with when it was last used"),
    ):
        _key_command(key, name, handler, text)
    _user(
        _command(key, "list", manage.key_list, "list a user's keys (never their secrets), with when each was last used")
    )


def _add_agency(commands: Any) -> None:
    agency = _group_of(commands, "agency", "agencies: delegation to another domain or a cloud service")
    create = _command(agency, "create", _agency_create, "create an agency that the trusted domain may assume")
    create.add_argument("name", metavar="NAME", help="the new agency's name (unique in --domain)")
    create.add_argument("--trust", required=True, metavar="DOMAIN", help="the trusted domain, e.g. op_svc_modelarts")
    create.add_argument("--policy", action="append", default=[], metavar="P", help="attach this policy (repeatable)")
    create.add_argument("--max-duration", type=int, default=MAX_DURATION, metavar="SECONDS", help=_DURATIONS)
    assumed = _command(
        agency,
        "assume",
        _agency_assume,
        "print temporary credentials of an agency (of --domain) for a user of its trusted domain",
    )
    assumed.add_argument("name", metavar="NAME", help="the agency's name in --domain")
    assumed.add_argument("--user", required=True, metavar="U", help="the caller: a user of the trusted domain")
    assumed.add_argument("--caller-domain", metavar="D", help="the caller's domain (default: --domain)")
    assumed.add_argument(
        "--duration",
        type=int,
        default=DEFAULT_DURATION,
        metavar="SECONDS",
        help=f"{_DURATIONS} (default {DEFAULT_DURATION})",
    )
    assumed.add_argument("--policy-file", metavar="F", help="a session policy (JSON) that narrows the credentials")
    _command(agency, "list", manage.agency_list, "list the domain's agencies")
    _named(agency, "show", manage.agency_show, "show an agency and its policies")
    update = _named(agency, "update", manage.agency_update, "change whom an agency trusts or its maximum session")
    update.add_argument("--trust", metavar="DOMAIN", help="the trusted domain")
    update.add_argument("--max-duration", type=int, metavar="SECONDS", help=_DURATIONS)
    _named(agency, "delete", manage.agency_delete, "delete an agency; its sessions stop working")


def _add_workspace(commands: Any) -> None:
    workspace = _group_of(commands, "workspace", "workspaces")
    create = _command(workspace, "create", _workspace_create, "create a workspace")
    create.add_argument("name", metavar="NAME", help="the new workspace's name")
    create.add_argument(
        "--auth-type", default="PUBLIC", type=str.upper, choices=("PUBLIC", "PRIVATE", "INTERNAL"), help=_AUTH_TYPES
    )
    create.add_argument("--grant", action="append", default=[], metavar="USER", help="grant a user (INTERNAL)")
    create.add_argument("--grant-group", action="append", default=[], metavar="GROUP", help="grant a group (INTERNAL)")
    create.add_argument("--owner", metavar="U", help="the owning user")
    _command(workspace, "list", manage.workspace_list, "list the domain's workspaces (and the default one)")
    _named(workspace, "show", manage.workspace_show, "show a workspace (by name or id)")
    for name, revoke, text in (
        ("grant", False, "grant users or groups an INTERNAL workspace"),
        ("revoke", True, "take a workspace's grants back"),
    ):
        grant = _named(workspace, name, manage.workspace_grant(revoke), text)
        grant.add_argument("--user", action="append", default=[], metavar="U", help="a user (repeatable)")
        grant.add_argument("--group", action="append", default=[], metavar="G", help="a group (repeatable)")
    update = _named(workspace, "update", manage.workspace_update, "change a workspace's access type or owner")
    update.add_argument("--auth-type", type=str.upper, choices=("PUBLIC", "PRIVATE", "INTERNAL"), help=_AUTH_TYPES)
    owner = update.add_mutually_exclusive_group()
    owner.add_argument("--owner", metavar="U", help="the new owning user")
    owner.add_argument("--no-owner", action="store_true", help="no owner (only admins enter a PRIVATE one)")
    _named(workspace, "delete", manage.workspace_delete, "delete a workspace with its grants and whitelist")


def _add_token(commands: Any) -> None:
    token = _group_of(commands, "token", "IAM tokens")
    issue = _command(token, "create", _token_create, "issue an IAM token for a user (X-Auth-Token), for scripts")
    _user(issue, option=True)
    issue.add_argument("--project", metavar="P", help="project name or id to scope the token to (else the domain)")
    issue.add_argument("--ttl", type=int, default=24 * 3600, metavar="SECONDS", help="validity (default 86400)")
    issue.add_argument("--algorithm", choices=TOKEN_ALGORITHMS, default="EdDSA", help="signing algorithm")


def _add_signing_key(commands: Any) -> None:
    signing = _group_of(commands, "signing-key", "the key that signs IAM tokens and sidecar assertions")
    _command(
        signing,
        "rotate",
        _signing_key_rotate,
        "start signing with a new key; tokens of the old one stay valid until they expire (7 days at most)",
        domain=False,
    ).add_argument(
        "--algorithm",
        choices=TOKEN_ALGORITHMS,
        default="EdDSA",
        help="the key's algorithm (EdDSA also signs sidecar assertions; ES256/RS256 for token_algorithm)",
    )


def _add_sealing_key(commands: Any) -> None:
    sealing = _group_of(commands, "sealing-key", "the key that seals temporary credentials' security tokens")
    _command(
        sealing,
        "rotate",
        _sealing_key_rotate,
        "seal with a new key; security tokens of the old one stay valid until they expire (24 hours at most)",
        domain=False,
    )


def _add_keypair(commands: Any) -> None:
    keypair = _group_of(commands, "keypair", "SSH key pairs for remote access")
    create = _command(
        keypair,
        "create",
        _keypair_create,
        "generate a key pair; the private key is shown once: on stdout (which a redirection may leave readable "
        "by others) or, with --out, in a new file of mode 0600",
    )
    create.add_argument("name", metavar="NAME", help="the new key pair's name (one user's are unique)")
    _user(create, option=True, text="the owning user's name in --domain")
    create.add_argument("--type", choices=("ed25519", "rsa"), default="ed25519", help="ed25519 or RSA-3072")
    create.add_argument(
        "--out", metavar="FILE", help="write the private key to FILE, created with mode 0600 (never overwritten)"
    )
    _user(_command(keypair, "list", manage.keypair_list, "list a user's key pairs (no master key needed)"), option=True)
    for name, handler, text in (
        ("show", manage.keypair_show, "show a key pair's public key (no master key needed)"),
        ("delete", manage.keypair_delete, "delete a key pair"),
    ):
        _user(_named(keypair, name, handler, text), option=True, text="the owning user's name in --domain")
    imported = _command(keypair, "import", _keypair_import, "register an OpenSSH public key")
    imported.add_argument("name", metavar="NAME", help="the new key pair's name (one user's are unique)")
    _user(imported, option=True, text="the owning user's name in --domain")
    imported.add_argument("--public-key-file", required=True, metavar="F", help="an OpenSSH public key (.pub) file")
    for parser in (create, imported):
        parser.add_argument("--expires", type=expiry, metavar="TIME", help="ISO 8601 UTC time the key stops working")
    authorized_keys = _command(
        keypair,
        "authorized-keys",
        _keypair_authorized_keys,
        "print the user's authorized_keys (public keys only: no master key needed)",
    )
    _user(authorized_keys, option=True)


def _add_whitelist(commands: Any) -> None:
    whitelist = _group_of(commands, "whitelist", "IP whitelists")
    setter = _command(
        whitelist, "set", _whitelist_set, "replace a whitelist: addresses or CIDRs (v4/v6); none allows all"
    )
    _whitelist_target(setter)
    setter.add_argument(
        "--unchecked-route",
        action="store_true",
        help="accept a --route the configured catalog does not know (a route declared in code)",
    )
    setter.add_argument(
        "addresses", nargs="*", metavar="ADDRESS_OR_CIDR", help="addresses or CIDRs, v4 or v6 (none: all allowed)"
    )
    for name, handler, text in (
        ("show", manage.whitelist_show, "show a whitelist (empty: every address allowed)"),
        ("clear", manage.whitelist_clear, "remove a whitelist: every address allowed"),
    ):
        _whitelist_target(_command(whitelist, name, handler, text))


def _add_export(commands: Any) -> None:
    export = _command(
        commands,
        "export",
        _export,
        "write the store as YAML to stdout (no secrets unless --include-secrets)",
        domain=False,
    )
    _passphrase_file(export)
    export.add_argument("--include-secrets", action="store_true", help="include secrets, sealed under the passphrase")


def _add_import(commands: Any) -> None:
    imported = _command(commands, "import", _import, "load an export into a fresh store, all or nothing", domain=False)
    _passphrase_file(imported)
    imported.add_argument("file", metavar="FILE", help="an export, or - for stdin")
    imported.add_argument("--replace", action="store_true", help="delete the store's current content first")


def _passphrase_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--passphrase-file", metavar="F", help=f"passphrase sealing the secrets (else ${PASSPHRASE_ENV})"
    )


def _add_master_key(commands: Any) -> None:
    master = _group_of(commands, "master-key", "the master key sealing stored secrets")
    _command(
        master, "rotate", _master_key_rotate, "new master key; re-seal every secret in one transaction", domain=False
    )


def _add_explain(commands: Any) -> None:
    explain = _command(
        commands, "explain", _explain, "decide an action, or a whole request, for a user from the store, and say why"
    )
    add_explain_options(explain)


#: The administration commands, in the order ``authmw --help`` lists them, each with the function adding its
#: parser (``policy create|attach|...``: see :func:`register_policy`).
COMMANDS = {
    "init": _add_init,
    "migrate": _add_migrate,
    "domain": _add_domain,
    "project": _add_project,
    "user": _add_user,
    "group": _add_group,
    "key": _add_key,
    "agency": _add_agency,
    "workspace": _add_workspace,
    "token": _add_token,
    "signing-key": _add_signing_key,
    "sealing-key": _add_sealing_key,
    "keypair": _add_keypair,
    "whitelist": _add_whitelist,
    "export": _add_export,
    "import": _add_import,
    "master-key": _add_master_key,
    "explain": _add_explain,
}


def register_policy(policy_commands: Any) -> None:
    """Add ``create`` and ``attach`` to the ``policy`` command."""
    create = _command(policy_commands, "create", _policy_create, "validate and store a policy of a domain")
    create.add_argument("name", metavar="NAME", help="the new policy's name (unique in --domain)")
    create.add_argument("--file", required=True, metavar="F", help="the policy document (JSON)")
    attach = _named(policy_commands, "attach", _policy_attach, "attach a policy to a group, user or agency")
    _one_target(attach, "group", "user", "agency")
    _project_scope(attach, "grant it on this project only (a group or an agency; requests in other projects ignore it)")
    _command(policy_commands, "list", manage.policy_list, "list the domain's policies and the system policies")
    _named(policy_commands, "show", manage.policy_show, "show a policy: its document and attachments")
    update = _named(policy_commands, "update", manage.policy_update, "replace a domain policy's document")
    update.add_argument("--file", required=True, metavar="F", help="the new policy document (JSON)")
    detach = _named(policy_commands, "detach", manage.policy_detach, "detach a policy from a group, user or agency")
    _one_target(detach, "group", "user", "agency")
    _project_scope(detach, "revoke its grant on this project (not a domain-wide attachment)")
    delete = _named(policy_commands, "delete", manage.policy_delete, "delete a domain policy")
    delete.add_argument("--force", action="store_true", help="detach it from everyone first (else refused if attached)")
