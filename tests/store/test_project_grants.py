"""Policies granted on a project (IAM's project-level grants): read with a ``g:ProjectId`` condition on every
statement, so they decide requests in that project only; kept, removed and exported with what they hang on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from authmw.errors import ChangeRefused, NotFound
from authmw.policy.document import MAX_POLICY_CHARS
from authmw.store import Keyring, Store
from authmw.store.database import open_database
from authmw.store.reads import scoped_to_project
from authmw.store.transfer import export_store, import_store

MASTER = bytes(range(32))
READ = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:trainJob:get"]}]}


def _store(path: Path) -> Store:
    store = Store(open_database(f"sqlite:///{path}", create=True), Keyring.from_keys(MASTER))
    store.initialize()
    return store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = _store(tmp_path / "authmw.db")
    made.create_project("cn-north-4")
    made.create_project("cn-east-3")
    made.create_user("alice")
    made.create_group("readers")
    made.add_user_to_group("readers", "alice")
    made.create_policy("read", json.dumps(READ))
    yield made
    made.close()


def test_each_statement_requires_the_project() -> None:
    scoped = json.loads(scoped_to_project(json.dumps(READ), "p1") or "")
    assert scoped["Statement"][0]["Condition"] == {"StringEquals": {"g:ProjectId": ["p1"]}}
    both = {
        "Version": "1.1",
        "Statement": [
            {"Effect": "Allow", "Action": ["a:b:c"], "Condition": {"StringEquals": {"g:projectid": ["p1", "p2"]}}},
            {"Effect": "Deny", "Action": ["a:b:d"], "Condition": {"StringEquals": {"g:ProjectId": "p2"}}},
        ],
    }
    narrowed = json.loads(scoped_to_project(json.dumps(both), "p1") or "")
    # ANDed: the statement naming p1 too is kept for p1; the one naming only p2 never applies.
    assert narrowed["Statement"] == [
        {"Effect": "Allow", "Action": ["a:b:c"], "Condition": {"StringEquals": {"g:projectid": ["p1"]}}}
    ]
    only_p2 = {**both, "Statement": both["Statement"][1:]}
    assert scoped_to_project(json.dumps(only_p2), "p1") is None  # no statement left: no policy at all


def test_a_project_grant_reaches_the_principal_for_that_project_only(store: Store) -> None:
    east = store.find_project("cn-east-3").id
    store.attach_policy("read", group="readers", project="cn-east-3")
    principal = store.principal(store.find_user("alice").id)
    assert principal is not None and store.show_group("readers").policies == ()  # nothing domain-wide
    in_east = principal.policies.decide("modelarts:trainJob:get", None, {"g:projectid": east})
    in_north = principal.policies.decide("modelarts:trainJob:get", None, {"g:projectid": "cn-north-4-id"})
    outside = principal.policies.decide("modelarts:trainJob:get", None, {})
    assert (in_east.allowed, in_north.allowed, outside.allowed) == (True, False, False)
    assert store.project_grants("cn-east-3", group="readers") == ("read",)
    assert store.project_grants(east, group="readers") == ("read",)  # by id too
    assert store.project_grants("cn-north-4", group="readers") == ()
    with pytest.raises(ChangeRefused, match="already granted"):
        store.attach_policy("read", group="readers", project="cn-east-3")
    with pytest.raises(ChangeRefused, match="group or an agency"):
        store.attach_policy("read", user="alice", project="cn-east-3")
    with pytest.raises(NotFound):
        store.attach_policy("read", group="readers", project="nowhere")
    with pytest.raises(ChangeRefused, match="attached to 1"):
        store.delete_policy("read")
    store.detach_policy("read", group="readers", project="cn-east-3")
    with pytest.raises(NotFound, match="on project"):
        store.detach_policy("read", group="readers", project="cn-east-3")


def test_a_policy_near_the_size_limit_still_loads_once_granted_on_a_project(store: Store) -> None:
    """The scoped copy adds a condition to each statement and may pass MAX_POLICY_CHARS: the limit holds for the
    document as written, so the grant must not make the member's policies unreadable (every request refused)."""
    statements = [{"Effect": "Allow", "Action": [f"modelarts:nb{j}:get{i}" for i in range(33)]} for j in range(8)]
    document = json.dumps({"Version": "1.1", "Statement": statements}, separators=(",", ":"))
    assert MAX_POLICY_CHARS - 400 < len(document) <= MAX_POLICY_CHARS
    store.create_policy("big", document)
    store.attach_policy("read", group="readers")
    store.attach_policy("big", group="readers", project="cn-east-3")
    east = store.find_project("cn-east-3").id
    principal = store.principal(store.find_user("alice").id)
    assert principal is not None
    assert principal.policies.decide("modelarts:trainJob:get", None, {}).allowed  # the domain-wide grant
    assert principal.policies.decide("modelarts:nb7:get32", None, {"g:projectid": east}).allowed
    assert not principal.policies.decide("modelarts:nb7:get32", None, {}).allowed


def test_grants_go_with_their_project_group_agency_or_policy(store: Store) -> None:
    store.create_agency("ma", trust="op_svc_modelarts")
    store.attach_policy("read", group="readers", project="cn-east-3")
    store.attach_policy("read", agency="ma", project="cn-east-3")
    store.attach_policy("read", agency="ma", project="cn-north-4")
    store.delete_project("cn-east-3")
    assert store.project_grants("cn-north-4", agency="ma") == ("read",)
    store.delete_agency("ma")
    store.delete_policy("read")  # nothing holds it any more


def test_export_and_import_carry_them(store: Store, tmp_path: Path) -> None:
    store.attach_policy("read", group="readers", project="cn-east-3")
    document = export_store(store)
    assert len(document["project_attachments"]) == 1
    target = _store(tmp_path / "copy.db")
    try:
        import_store(target, document, replace=True)
        assert target.project_grants("cn-east-3", group="readers") == ("read",)
        broken = {**document, "project_attachments": [{**document["project_attachments"][0], "principal_type": "user"}]}
        with pytest.raises(ChangeRefused, match="group or agency"):
            import_store(target, broken, replace=True)
    finally:
        target.close()
