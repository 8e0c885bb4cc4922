"""The test-owned TCP proxy: it forwards, refuses and black-holes a real service on demand."""

from __future__ import annotations

import redis

from keel.testing.proxy import TcpProxy


def test_the_proxy_takes_redis_away_and_gives_it_back(redis_url: str) -> None:
    with TcpProxy.in_front_of(redis_url) as proxy:
        client = redis.Redis.from_url(proxy.url(redis_url), socket_timeout=0.5, socket_connect_timeout=0.5)
        assert client.ping()
        proxy.refuse()
        try:
            client.ping()
            raise AssertionError("a refused link answered")
        except redis.ConnectionError:
            pass
        proxy.restore()
        assert client.ping()
        proxy.blackhole()
        try:
            client.ping()
            raise AssertionError("a black-holed link answered")
        except redis.TimeoutError:
            pass
        proxy.restore()
        assert client.ping()
        client.close()
