"""The hot-path view: cached reads, revision polling on an injected timer, bounded caches, racing reads."""

from __future__ import annotations

import contextlib
import json

import pytest

from authmw.clientaddr import IpWhitelist
from authmw.errors import AddressNotAllowed
from authmw.guard import Guard
from authmw.models import Request, WhitelistScope
from authmw.signing import sign_request
from authmw.store import CachedIdentity, Store


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """Counts the store reads behind a CachedIdentity."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reads = 0
        self.names: list[str] = []

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self.store, name)
        if name.startswith("read_"):
            self.reads += 1
            self.names.append(name)
        return attribute


def test_hits_do_not_touch_the_store_until_the_refresh_interval(store: Store) -> None:
    store.create_user("alice")
    key = store.create_access_key("alice")
    counting, timer = CountingStore(store), Ticker()
    cached = CachedIdentity(counting, refresh=0.25, timer=timer)  # type: ignore[arg-type]
    found = cached.get_access_key(key.access)
    assert found is not None and found.secret_key == key.secret
    for _ in range(100):
        assert cached.get_access_key(key.access) is found
    assert counting.reads == 1


def test_a_disabled_key_disappears_at_the_next_poll(store: Store) -> None:
    store.create_user("alice")
    key = store.create_access_key("alice")
    timer = Ticker()
    cached = CachedIdentity(store, refresh=0.25, timer=timer)
    assert cached.get_access_key(key.access) is not None
    store.set_access_key_status(key.access, False)
    timer.now = 0.2
    assert cached.get_access_key(key.access) is not None  # within the refresh interval
    timer.now = 0.3
    assert cached.get_access_key(key.access) is None
    store.set_access_key_status(key.access, True)
    timer.now = 0.6
    assert cached.get_access_key(key.access) is not None


def test_unknown_keys_are_cached_as_none(store: Store) -> None:
    counting = CountingStore(store)
    cached = CachedIdentity(counting, timer=Ticker())  # type: ignore[arg-type]
    assert cached.get_access_key("AKIDUNKNOWN0") is None
    assert cached.get_access_key("AKIDUNKNOWN0") is None
    assert counting.reads == 1


def test_a_key_created_after_a_negative_lookup_appears_at_the_next_poll(store: Store) -> None:
    store.create_user("alice")
    timer = Ticker()
    cached = CachedIdentity(store, timer=timer)
    assert cached.get_access_key("AKIDEXAMPLE1") is None
    store.create_access_key("alice", access_key="AKIDEXAMPLE1", secret_key="s" * 32)
    timer.now = 1.0
    assert cached.get_access_key("AKIDEXAMPLE1") is not None


def test_caches_are_bounded(store: Store) -> None:
    cached = CachedIdentity(store, max_unknown=10, timer=Ticker())
    for i in range(100):
        cached.get_access_key(f"AKIDUNKNOWN{i:03d}")
    assert len(cached._unknown) == 10
    assert list(cached._unknown)[-1] == "AKIDUNKNOWN099"  # the oldest go first


def test_principal_policy_changes_follow_the_revision(store: Store) -> None:
    alice = store.create_user("alice")
    store.create_group("developers")
    store.add_user_to_group("developers", "alice")
    timer = Ticker()
    cached = CachedIdentity(store, timer=timer)
    principal = cached.principal(alice.id)
    assert principal is not None and not principal.policies.decide("modelarts:trainJob:create").allowed
    store.attach_policy("ModelArts CommonOperations", group="developers")
    timer.now = 1.0
    principal = cached.principal(alice.id)
    assert principal is not None and principal.policies.decide("modelarts:trainJob:create").allowed
    store.set_user_enabled("alice", False)
    timer.now = 2.0
    assert cached.principal(alice.id) is None


def test_users_with_the_same_policies_share_one_compiled_set(store: Store) -> None:
    store.create_group("developers")
    store.attach_policy("ModelArts CommonOperations", group="developers")
    ids = []
    for name in ("alice", "bob"):
        ids.append(store.create_user(name).id)
        store.add_user_to_group("developers", name)
    cached = CachedIdentity(store, timer=Ticker())
    first, second = (cached.principal(i) for i in ids)
    assert first is not None and second is not None
    assert first.policies is second.policies


def test_workspaces_and_whitelists_are_cached_and_refreshed(store: Store) -> None:
    alice = store.create_user("alice")
    workspace = store.create_workspace("team-a")
    timer = Ticker()
    cached = CachedIdentity(store, timer=timer)
    found = cached.workspace(workspace.id)
    assert found is not None and found.name == "team-a"
    assert cached.workspace("f" * 32) is None
    assert cached.whitelist(WhitelistScope.USER, alice.id).allows("8.8.8.8")
    store.set_whitelist("user", "alice", ["10.0.0.0/8"])
    timer.now = 1.0
    assert not cached.whitelist(WhitelistScope.USER, alice.id).allows("8.8.8.8")


def test_a_read_from_an_older_snapshot_is_returned_but_not_kept(store: Store) -> None:
    store.create_user("alice")
    key = store.create_access_key("alice")
    timer = Ticker()
    cached = CachedIdentity(store, timer=timer)
    cached.poll()
    old_revision, old_value = store.read_access_key(key.access)
    store.set_access_key_status(key.access, False)
    timer.now = 1.0
    assert cached.get_access_key(key.access) is None  # sees the new revision
    assert old_value is not None
    cached._keep(old_revision, cached._keys, key.access, old_value)  # a read that raced the change...
    assert cached.get_access_key(key.access) is None  # ...is not kept


def test_strings_that_cannot_be_access_keys_never_reach_the_store(store: Store) -> None:
    counting = CountingStore(store)
    cached = CachedIdentity(counting, timer=Ticker())  # type: ignore[arg-type]
    for bad in ("", "short", "A" * 129, "AKID EXAMPLE", "AKIDÉXAMPLE", "AKID\x00EXAMPLE", "x" * 8000):
        assert cached.get_access_key(bad) is None
    assert counting.reads == 0 and not cached._unknown


def test_a_flood_of_unknown_keys_does_not_evict_real_ones(store: Store) -> None:
    store.create_user("alice")
    key = store.create_access_key("alice")
    counting = CountingStore(store)
    cached = CachedIdentity(counting, max_entries=10, max_unknown=100, timer=Ticker())  # type: ignore[arg-type]
    assert cached.get_access_key(key.access) is not None
    for i in range(1000):
        assert cached.get_access_key(f"AKIDUNKNOWN{i:05d}") is None
    assert len(cached._unknown) == 100
    reads = counting.reads
    assert cached.get_access_key(key.access) is not None
    assert counting.reads == reads  # still cached


def test_entries_are_bounded_oldest_out(store: Store) -> None:
    # One eviction rule for every memo (authmw.cache): the entry put longest ago goes; a hit does not reorder.
    store.create_user("alice")
    store.create_user("bob")
    keys = [store.create_access_key(u).access for u in ("alice", "alice", "bob", "bob")]
    counting = CountingStore(store)
    cached = CachedIdentity(counting, max_entries=2, timer=Ticker())  # type: ignore[arg-type]
    for access in keys:
        assert cached.get_access_key(access) is not None
    assert list(cached._keys) == keys[2:]
    reads = counting.reads
    assert cached.get_access_key(keys[3]) is not None
    assert counting.reads == reads  # a hit
    assert cached.get_access_key(keys[0]) is not None
    assert counting.reads == reads + 1 and list(cached._keys) == [keys[3], keys[0]]


def test_policy_documents_in_the_store_are_json(store: Store) -> None:
    document = {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["modelarts:*:*"]}]}
    store.create_policy("all", json.dumps(document))
    with store.db.read() as tx:
        assert json.loads(tx.one("SELECT document FROM policies WHERE name = 'all'")[0]) == document


class Gate:
    """A store whose reads can be made to hang (a blackholed network) or fail (a stopped database)."""

    def __init__(self, store: Store) -> None:
        import threading

        self.store, self.state = store, "up"
        self.released = threading.Event()
        self.reads = 0

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self.store, name)
        if not (name.startswith("read_") or name == "revision"):
            return attribute

        def read(*args: object) -> object:
            import time

            from authmw.errors import StoreUnavailable

            self.reads += 1
            if self.state == "slow":
                time.sleep(0.15)
            elif self.state == "hang":
                self.released.wait(10)
            elif self.state == "down":
                raise StoreUnavailable("stopped")
            return attribute(*args)  # type: ignore[operator]

        return read


def test_an_outage_serves_the_cached_within_the_grace_and_refuses_the_rest_at_once(store: Store) -> None:
    import time

    import pytest

    from authmw.errors import StoreUnavailable

    store.create_user("alice")
    store.create_user("bob")
    alice, bob = store.create_access_key("alice"), store.create_access_key("bob")
    gate, timer = Gate(store), Ticker()
    cached = CachedIdentity(gate, refresh=0.25, timer=timer, deadline=0.05, grace=10)  # type: ignore[arg-type]
    assert cached.get_access_key(alice.access) is not None
    gate.state = "hang"
    timer.now = 1.0
    started = time.perf_counter()
    assert cached.get_access_key(alice.access) is not None  # the poll misses its deadline: down, within the grace
    assert time.perf_counter() - started < 0.5
    assert cached.down and not cached.available()
    started = time.perf_counter()
    with pytest.raises(StoreUnavailable):
        cached.get_access_key(bob.access)  # not cached: refused without waiting
    assert time.perf_counter() - started < 0.01
    timer.now = 9.9  # the grace runs from the last answer (at 0)
    assert cached.get_access_key(alice.access) is not None
    timer.now = 10.1  # the grace is over: the cache is not served either
    with pytest.raises(StoreUnavailable):
        cached.get_access_key(alice.access)
    gate.state = "up"
    gate.released.set()
    deadline = time.monotonic() + 2
    while cached.down:  # a probe (started by the traffic) finds the store again
        assert time.monotonic() < deadline
        timer.now += 0.3
        with contextlib.suppress(StoreUnavailable):
            cached.current_revision()
        time.sleep(0.01)
    assert cached.available()
    assert cached.get_access_key(bob.access) is not None


def test_a_slow_answer_refuses_its_request_only_and_fills_the_cache(store: Store) -> None:
    """A read that misses the deadline (a loaded machine, a slow query) refuses that request; its answer, when it
    comes, is kept and says the store is up: the retry is served from the cache, and no other request is refused
    meanwhile for an outage that was not one."""
    import time

    import pytest

    from authmw.errors import StoreUnavailable

    store.create_user("alice")
    store.create_user("bob")
    alice, bob = store.create_access_key("alice"), store.create_access_key("bob")
    gate, timer = Gate(store), Ticker()
    cached = CachedIdentity(gate, refresh=0.25, timer=timer, deadline=0.05, grace=10)  # type: ignore[arg-type]
    assert cached.get_access_key(alice.access) is not None
    gate.state = "slow"
    with pytest.raises(StoreUnavailable):
        cached.get_access_key(bob.access)
    assert cached.down
    deadline = time.monotonic() + 2
    while cached.down:  # the answer comes after the caller gave up on it
        assert time.monotonic() < deadline, "a late answer leaves the store marked down"
        time.sleep(0.01)
    gate.state, reads = "up", gate.reads
    assert cached.get_access_key(bob.access) == store.get_access_key(bob.access)
    assert gate.reads == reads + 1  # the revision (polled again after the outage), not bob's key: it was kept


def test_a_stopped_store_is_noticed_by_the_poll(store: Store) -> None:
    import pytest

    from authmw.errors import StoreUnavailable

    store.create_user("alice")
    key = store.create_access_key("alice")
    gate, timer = Gate(store), Ticker()
    cached = CachedIdentity(gate, refresh=0.25, timer=timer, deadline=0.05, grace=0)  # type: ignore[arg-type]
    assert cached.get_access_key(key.access) is not None
    gate.state = "down"
    timer.now = 1.0
    with pytest.raises(StoreUnavailable):  # no grace: refused as soon as the poll fails
        cached.get_access_key(key.access)
    assert cached.down


def test_reader_threads_live_with_the_cache_not_with_a_request(store: Store) -> None:
    """The readers start with the cache (a thread started by a request spent that request's deadline being
    created: the first requests of a fresh process were refused so on a loaded machine), stay while it lives
    and end when it is dropped (a guard replaced on reload leaves none behind)."""
    import gc
    import threading
    import time

    def readers() -> set[threading.Thread]:
        return {thread for thread in threading.enumerate() if thread.name == "authmw-store"}

    before = readers()  # (other tests' caches may end theirs meanwhile: only this cache's threads are counted)
    cached = CachedIdentity(store, deadline=0.05, readers=3)
    own = readers() - before
    assert len(own) == 3
    assert cached.get_access_key("AKNOTAKEYATALL0000000") is None  # (a read: served by one of them)
    assert readers() - before == own
    del cached
    gc.collect()
    deadline = time.monotonic() + 2
    while any(thread.is_alive() for thread in own):
        assert time.monotonic() < deadline, "the readers outlived their cache"
        time.sleep(0.01)


def test_whitelist_scopes_follow_the_store(store: Store) -> None:
    """The scopes with a whitelist, which the guard reads to skip the others' lookups, move with the revision."""
    store.create_user("alice")
    store.create_workspace("team-a")
    timer = Ticker()
    cached = CachedIdentity(store, timer=timer)
    assert cached.whitelist_scopes() == frozenset()
    store.set_whitelist("user", "alice", ["10.0.0.0/8"])
    timer.now = 0.1
    assert cached.whitelist_scopes() == frozenset()  # within the refresh interval
    timer.now = 1.0
    assert cached.whitelist_scopes() == {WhitelistScope.USER}
    store.set_whitelist("workspace", "team-a", ["10.0.0.0/8"])
    store.set_whitelist("user", "alice", [])  # no entries: the whitelist is gone
    timer.now = 2.0
    assert cached.whitelist_scopes() == {WhitelistScope.WORKSPACE}


def test_a_guard_over_a_store_without_whitelists_skips_their_lookups_and_sees_a_new_one(store: Store) -> None:
    """No user or workspace whitelist in the store: none looked up per request; one set later applies from the next
    poll. (Route whitelists are looked up always: see Guard._run.)"""
    store.create_group("developers")
    store.attach_policy("ModelArts CommonOperations", group="developers")
    store.create_user("alice")
    store.add_user_to_group("developers", "alice")
    key = store.create_access_key("alice")
    counting, timer = CountingStore(store), Ticker()
    identity = CachedIdentity(counting, timer=timer)  # type: ignore[arg-type]
    looked_up: list[WhitelistScope] = []
    whitelist = identity.whitelist

    def spied(scope: WhitelistScope, name: str) -> IpWhitelist:
        looked_up.append(scope)
        return whitelist(scope, name)

    identity.whitelist = spied  # type: ignore[method-assign]
    guard = Guard(identity=identity, unmatched="authenticate-only")

    def request(nonce: str) -> Request:  # a distinct signature each: the replay guard is on
        url = "http://modelarts.example.com/v1/anything"
        headers = {"X-Nonce": nonce}
        signed = sign_request("GET", url, headers, b"", access_key=key.access, secret_key=key.secret)
        return Request.build("GET", "/v1/anything", list(signed.headers.items()), b"", "8.8.8.8")

    guard.check(request("1"))
    guard.check(request("2"))
    assert counting.names.count("read_whitelist_scopes") == 1  # once per revision
    assert WhitelistScope.USER not in looked_up and WhitelistScope.WORKSPACE not in looked_up
    store.set_whitelist("user", "alice", ["10.0.0.0/8"])
    timer.now = 1.0
    with pytest.raises(AddressNotAllowed):
        guard.check(request("3"))
    assert WhitelistScope.USER in looked_up
