"""The two implementations of the shared state answer alike (one protocol): the same operations on the in-process
state and on Redis (a real one, a key prefix per test), with the same clock, give the same answers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from authmw.errors import ReplayedRequest, ReplayQuotaExceeded, SharedStateUnavailable
from authmw.sharedstate import LocalState, SharedState
from authmw.signing.replay import ReplayGuard
from authmw.store.redisstate import RedisState
from tests.support.servers import free_port

redis = pytest.importorskip("redis")
REDIS = os.environ.get("AUTHMW_TEST_REDIS", "redis://127.0.0.1:6379/0")


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["local", "redis"])
def state(request: pytest.FixtureRequest, clock: Clock) -> Iterator[SharedState]:
    if request.param == "local":
        yield LocalState(replay=ReplayGuard(quota=3, clock=clock), clock=clock)
        return
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {REDIS}")
    prefix = f"authmw-test-{os.urandom(6).hex()}:"
    found = RedisState(REDIS, prefix=prefix, quota=3, clock=clock)
    yield found
    found.close()
    client = redis.Redis.from_url(REDIS)
    for name in client.scan_iter(match=prefix + "*"):
        client.delete(name)


def test_the_replay_window_accepts_once_within_a_quota(state: SharedState, clock: Clock) -> None:
    until = clock.now + 30
    state.remember(b"a" * 16, until, "ana")
    with pytest.raises(ReplayedRequest):
        state.remember(b"a" * 16, until, "ana")
    with pytest.raises(ReplayedRequest):  # charged to anyone: a fingerprint is the request's
        state.remember(b"a" * 16, until, "bob")
    state.remember(b"b" * 16, until, "ana")
    state.remember(b"c" * 16, until, "ana")
    with pytest.raises(ReplayQuotaExceeded):  # ana holds 3 live requests
        state.remember(b"d" * 16, until, "ana")
    state.remember(b"d" * 16, until, "bob")  # only ana is held back


def test_windows_count_reserved_attempts_and_slide(state: SharedState, clock: Clock) -> None:
    limits = [("login:u:ana", 2), ("login:a:10.0.0.1", 3)]
    assert state.reserve(limits, 10) == 0
    assert state.reserve(limits, 10) == 0
    assert state.reserve(limits, 10) == 1  # two in flight: ask again shortly
    state.settle([key for key, _ in limits], 10, count=True)
    clock.now += 2
    state.settle([key for key, _ in limits], 10, count=True)
    assert state.waiting(limits, 10) == 8  # two failures: until the older leaves the window
    assert state.waiting([("login:u:bob", 2), ("login:a:10.0.0.1", 3)], 10) == 0
    assert state.reserve([("login:u:bob", 2), ("login:a:10.0.0.1", 3)], 10) == 0
    state.settle(["login:u:bob", "login:a:10.0.0.1"], 10, count=True)
    assert state.waiting([("login:u:carol", 2), ("login:a:10.0.0.1", 3)], 10) == 8  # the address: 3 failures
    clock.now += 8.5  # the first failures left the window: ana holds 1 of 2, the address 2 of 3
    assert state.waiting(limits, 10) == 0
    assert state.reserve(limits, 10) == 0
    assert state.waiting(limits, 10) == 1  # full again, with one in flight


def test_a_success_forgives_its_key_only(state: SharedState) -> None:
    keys = ["login:u:ana", "login:a:10.0.0.1"]
    limits = [(keys[0], 1), (keys[1], 2)]
    assert state.reserve(limits, 60) == 0
    state.settle(keys, 60, count=True)
    assert state.waiting(limits, 60) > 0
    assert state.reserve([(keys[1], 2)], 60) == 0
    state.settle([keys[1]], 60, count=True)
    state.settle([keys[0]], 60, count=False, forget=keys[0])  # a later success of ana's
    assert state.waiting([(keys[0], 1)], 60) == 0
    assert state.waiting([(keys[1], 2)], 60) > 0  # the address's failures are kept


def test_notices_reach_subscribers_while_they_live(state: SharedState) -> None:
    import threading

    heard = threading.Event()

    class Cache:
        def poll(self) -> None:
            heard.set()

    cache = Cache()
    state.subscribe(cache.poll)
    if isinstance(state, RedisState):  # the subscriber thread connects on its own
        for _ in range(50):  # published until the subscription is up
            state.publish(7)
            if heard.wait(0.1):
                break
    else:
        state.publish(7)
    assert heard.is_set()


def test_redis_unreachable_fails_closed_at_once_and_recovers() -> None:
    state = RedisState(f"redis://127.0.0.1:{free_port()}/0", timeout=0.05)
    for _ in range(3):
        with pytest.raises(SharedStateUnavailable):
            state.remember(os.urandom(16), 2e9, "ana")
        with pytest.raises(SharedStateUnavailable):
            state.reserve([("login:u:ana", 5)], 60)
    state.settle(["login:u:ana"], 60, count=True)  # an attempt decided: logged, not raised
    state.publish(1)  # best effort
    local = RedisState(f"redis://127.0.0.1:{free_port()}/0", timeout=0.05, fallback=True)
    local.remember(b"x" * 16, 2e9, "ana")
    with pytest.raises(ReplayedRequest):
        local.remember(b"x" * 16, 2e9, "ana")
    assert local.reserve([("login:u:ana", 1)], 60) == 0
    assert local.reserve([("login:u:ana", 1)], 60) == 1
    assert local.fallbacks == 4


def test_a_secret_is_made_once_and_shared(state: SharedState) -> None:
    first = state.secret("unknown-users")
    assert len(first) == 16 and state.secret("unknown-users") == first
    assert state.secret("other") != first
    if isinstance(state, RedisState):  # another process with the same prefix reads the same
        other = RedisState(REDIS, prefix=state._prefix)
        assert other.secret("unknown-users") == first
        other.close()
