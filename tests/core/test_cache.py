"""authmw.cache.BoundedCache: the one bounded memo (oldest out, reads are dict reads, expiry by an injected timer)."""

from __future__ import annotations

import threading

import pytest

from authmw.cache import BoundedCache


def test_a_new_key_when_full_evicts_the_oldest() -> None:
    cache: BoundedCache[str, int] = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a hit does not reorder
    cache.put("c", 3)
    assert list(cache.items()) == [("b", 2), ("c", 3)]
    cache.put("b", 20)  # an existing key: replaced in place, nothing evicted
    assert list(cache.items()) == [("b", 20), ("c", 3)]


def test_capacity_zero_keeps_nothing_and_negative_is_refused() -> None:
    cache: BoundedCache[str, int] = BoundedCache(0)
    cache.put("a", 1)
    assert not cache
    with pytest.raises(ValueError, match="negative"):
        BoundedCache(-1)


def test_fresh_reads_deadlines_against_the_injected_timer() -> None:
    now = [100.0]
    cache: BoundedCache[str, tuple[str, float]] = BoundedCache(10, timer=lambda: now[0])
    cache.put("token", ("claims", 105.0))
    assert cache.fresh("token") == "claims"
    now[0] = 105.0
    assert cache.fresh("token") is None
    assert "token" not in cache  # a stale entry is dropped
    assert cache.fresh("unknown") is None


def test_concurrent_puts_stay_within_capacity() -> None:
    cache: BoundedCache[int, int] = BoundedCache(100)

    def fill(start: int) -> None:
        for i in range(start, start + 5000):
            cache.put(i, i)

    threads = [threading.Thread(target=fill, args=(n * 10_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) <= 100 + len(threads)  # a racing put may land while another evicts
