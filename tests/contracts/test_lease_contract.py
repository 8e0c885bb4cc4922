"""The LeaseStore contract over every SQL backend (SQLite and PostgreSQL): one holder per name at a time;
the holder renews; an expired lease goes to the next asker with a new token, and the old holder can
neither renew nor release it; a released lease is free at once; many threads racing for a free name:
exactly one wins."""

from __future__ import annotations

import threading

from keel.store.protocols import Store


def test_one_holder_at_a_time_until_it_expires_then_a_new_token(store: Store) -> None:
    assert store.get_lease("siem") is None
    a = store.acquire_lease("siem", "a", 30, 100.0)
    assert a is not None and (a.holder, a.token, a.expires_at) == ("a", 1, 130.0)
    assert store.acquire_lease("siem", "b", 30, 110.0) is None  # a's runs
    again = store.acquire_lease("siem", "a", 30, 110.0)  # a asking again renews, same token
    assert again is not None and (again.token, again.expires_at) == (1, 140.0)
    renewed = store.renew_lease(a, 30, 120.0)
    assert renewed is not None and renewed.expires_at == 150.0
    assert store.acquire_lease("other", "b", 30, 120.0) is not None  # names are independent
    b = store.acquire_lease("siem", "b", 30, 150.0)  # expired: b takes it
    assert b is not None and (b.holder, b.token) == ("b", 2)
    assert store.renew_lease(a, 30, 151.0) is None and store.release_lease(a) is False  # a lost it
    assert store.get_lease("siem") == b
    assert store.release_lease(b) is True
    c = store.acquire_lease("siem", "c", 30, 152.0)  # released: free at once, a new token
    assert c is not None and (c.holder, c.token) == ("c", 3)


def test_an_expired_lease_nobody_took_is_still_its_holders(store: Store) -> None:
    a = store.acquire_lease("siem", "a", 10, 100.0)
    assert a is not None
    late = store.renew_lease(a, 10, 500.0)
    assert late is not None and (late.token, late.expires_at) == (1, 510.0)


def test_racing_askers_for_a_free_name_one_wins(store: Store) -> None:
    won: list[str] = []
    barrier = threading.Barrier(8)

    def ask(holder: str) -> None:
        barrier.wait()
        if store.acquire_lease("race", holder, 30, 100.0) is not None:
            won.append(holder)

    threads = [threading.Thread(target=ask, args=(f"h{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1, won
