"""Login attempt limits over real HTTP: reserved before any password work (concurrent guesses cannot all be
checked), keyed canonically (the domain by name or by id is one user), per resolved client address (not the
load balancer's), kept across a SIGHUP reload, and with a cap on password checks in flight."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from authmw.iam_api import AttemptLimiter, TokenService
from authmw.proxy import build_app
from tests.support.forms import SETTINGS
from tests.support.proxy import proxy_process
from tests.support.servers import serve_asgi
from tests.support.world import World, echo_asgi

PASSWORD = "correct horse battery staple"
TOKENS = "/v3/auth/tokens"


def body(user: str, password: str, domain: dict[str, str] | None = None) -> dict[str, Any]:
    user_part = {"name": user, "password": password, "domain": domain or {"name": "default"}}
    return {"auth": {"identity": {"methods": ["password"], "password": {"user": user_part}}}}


def login(url: str, user: str, password: str, **options: Any) -> httpx.Response:
    headers = options.pop("headers", None)
    return httpx.post(url + TOKENS, json=body(user, password, **options), headers=headers, timeout=60)


class Checks:
    """Counts the store's password checks (each one scrypt) and the most that ran at once."""

    def __init__(self, check: Callable[..., Any], delay: float = 0.0) -> None:
        self._check, self._delay, self._lock = check, delay, threading.Lock()
        self.count = self.running = self.most = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.count += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self._delay)
            return self._check(*args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


@contextlib.contextmanager
def proxy(world: World, limiter: AttemptLimiter | None = None, **settings: Any) -> Iterator[str]:
    with serve_asgi(echo_asgi) as upstream:
        given = {} if limiter is None else {"limiter": limiter}
        app = build_app(replace(SETTINGS, upstream=upstream, **settings), world.store, **given)
        with serve_asgi(app) as url:
            yield url


@pytest.fixture
def checks(world: World, monkeypatch: pytest.MonkeyPatch) -> Checks:
    counted = Checks(world.store.check_password)
    monkeypatch.setattr(world.store, "check_password", counted)
    return counted


def user(world: World, name: str) -> str:
    world.store.create_user(name, password=PASSWORD)
    return name


def burst(count: int, send: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """``count`` requests released at the same moment."""
    start = threading.Barrier(count)

    def one(index: int) -> httpx.Response:
        start.wait()
        return send(index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_concurrent_guesses_are_reserved_before_any_password_work(world: World, checks: Checks) -> None:
    name = user(world, "guessed-at-once")
    with proxy(world, AttemptLimiter(max_hashing=64)) as url:  # the in-flight cap is not what stops them here
        answers = burst(30, lambda i: login(url, name, f"guess number {i}"))
        statuses = sorted(a.status_code for a in answers)
        assert checks.count == 5, statuses  # one scrypt per allowed attempt, not per request
        assert statuses == [401] * 5 + [429] * 25
        assert all(int(a.headers["retry-after"]) >= 1 for a in answers if a.status_code == 429)
        right = login(url, name, PASSWORD)  # the right password, after the limit: refused unchecked
        assert (right.status_code, right.json()["error_code"]) == (429, "too_many_attempts")
        assert checks.count == 5


def test_the_domain_by_name_and_by_id_is_one_user(world: World, checks: Checks) -> None:
    name = user(world, "two-spellings")
    domain_id = world.store.find_user(name).domain_id
    with proxy(world) as url:
        for i in range(5):
            spelling = {"name": "default"} if i % 2 else {"id": domain_id}
            assert login(url, name, "wrong", domain=spelling).status_code == 401
        for spelling in ({"name": "default"}, {"id": domain_id}):
            locked = login(url, name, PASSWORD, domain=spelling)
            assert (locked.status_code, locked.json()["error_code"]) == (429, "too_many_attempts")
    assert checks.count == 5


def test_unknown_users_and_domains_are_limited_in_bounded_keys(world: World, checks: Checks) -> None:
    for domain in ({"name": "default"}, {"name": "no-such-domain"}, {"id": "no-such-id"}):
        with proxy(world) as url:  # one each: two unknown names may share a bucket, by design
            for _ in range(5):
                assert login(url, "nobody-here", "guess", domain=domain).status_code == 401
            assert login(url, "nobody-here", "guess", domain=domain).status_code == 429
    assert checks.count == 15  # each unknown attempt still cost one scrypt
    from authmw.iam_api import UNKNOWN_BUCKETS

    limiter = AttemptLimiter()
    keys = {limiter.unknown_key("default", f"user-{i}") for i in range(20_000)}
    assert len(keys) <= UNKNOWN_BUCKETS


def test_password_checks_in_flight_are_capped(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = Checks(world.store.check_password, delay=0.5)
    monkeypatch.setattr(world.store, "check_password", slow)
    names = [user(world, f"busy-{i}") for i in range(10)]
    with proxy(world, AttemptLimiter(max_hashing=2)) as url:
        started = time.monotonic()
        answers = burst(10, lambda i: login(url, names[i], PASSWORD))
        elapsed = time.monotonic() - started
        health = httpx.get(url + "/healthz", timeout=5)
    busy = [a for a in answers if a.status_code == 503]
    assert slow.most <= 2 and slow.count == 10 - len(busy)
    assert busy and all(a.json()["error_code"] == "login_busy" and a.headers["retry-after"] == "1" for a in busy)
    assert {a.status_code for a in answers} <= {201, 503}
    assert elapsed < 10 * 0.5  # refused at once, not queued behind the checks
    assert health.status_code == 200


def test_the_address_limit_counts_the_client_behind_a_trusted_balancer(world: World) -> None:
    name = user(world, "behind-the-balancer")
    with proxy(world, trusted_proxies=("127.0.0.1",)) as url:
        attacker = {"X-Forwarded-For": "203.0.113.66"}
        for i in range(20):  # many names, so the per-user limit is not what stops them
            assert login(url, f"made-up-{i}", "guess", headers=attacker).status_code == 401
        locked = login(url, name, PASSWORD, headers=attacker)
        assert (locked.status_code, locked.json()["error_code"]) == (429, "too_many_attempts")
        # Everyone else comes through the same balancer (127.0.0.1) and is not locked out.
        assert login(url, name, PASSWORD, headers={"X-Forwarded-For": "198.51.100.20"}).status_code == 201


def test_the_address_limit_takes_an_ipv6_client_by_its_64() -> None:
    limiter = AttemptLimiter(per_user=100, per_address=2)
    limiter.reserve("a", "2001:db8:1:2::1").failed()
    limiter.reserve("b", "2001:db8:1:2:ffff::9").failed()
    assert limiter.retry_after("c", "2001:db8:1:2::abcd") > 0
    assert limiter.retry_after("c", "2001:db8:1:3::1") == 0


def test_attempts_in_flight_count_and_are_never_forgotten() -> None:
    limiter = AttemptLimiter(per_user=2, max_keys=2, max_hashing=10)
    first, second = limiter.reserve("alice", None), limiter.reserve("alice", None)
    assert limiter.retry_after("alice", None) == 1  # both may still fail
    for name in "bcdef":  # push other keys through the bounded table
        limiter.reserve(name, None).failed()
    with pytest.raises(Exception, match="limited"):
        limiter.reserve("alice", None)
    first.succeeded()
    second.release()
    second.failed()  # settled once: ignored
    assert limiter.retry_after("alice", None) == 0
    assert limiter._hashing == 0


def test_a_sighup_reload_keeps_the_counters(world: World, tmp_path: Path) -> None:
    name = user(world, "reloaded-user")
    with proxy_process(world, tmp_path, "unmatched: deny\n") as (process, url, _audit):
        for _ in range(5):
            assert login(url, name, "wrong").status_code == 401
        assert login(url, name, PASSWORD).status_code == 429
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while 'authmw_reloads_total{result="ok"} 1.0' not in httpx.get(url + "/metrics").text:
            assert time.monotonic() < deadline, "the reload did not happen"
            time.sleep(0.05)
        locked = login(url, name, PASSWORD)
        assert (locked.status_code, locked.json()["error_code"]) == (429, "too_many_attempts")


def test_a_token_service_shares_the_limiter_it_is_given(world: World) -> None:
    from authmw.assembly import open_guard
    from authmw.tokens import TokenSigner

    limiter = AttemptLimiter()
    guard = open_guard(world.store, config=SETTINGS)
    service = TokenService(world.store, TokenSigner(*world.store.signing_key()), guard, limiter=limiter)
    assert service.limiter is limiter
