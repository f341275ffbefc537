"""Login throttling: the sans-IO rules with an injected clock, then the token endpoint answering 429 with
Retry-After to a guesser while other users and addresses log in as usual."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from backend.api.auth import hash_password
from backend.api.throttle import MAX_KEYS, LoginThrottle
from backend.settings import Settings, User
from tests.backend.conftest import JWT_SECRET


def test_user_locked_after_free_failures_and_lock_doubles() -> None:
    t = LoginThrottle(user_free=3, address_free=100, base_s=1.0, max_s=60.0)
    for i in range(2):
        assert t.retry_after("ana", "10.0.0.1", i) == 0
        t.failed("ana", "10.0.0.1", i)
    assert t.retry_after("ana", "10.0.0.1", 2.0) == 0  # two failures are free
    t.failed("ana", "10.0.0.1", 3.0)
    assert t.retry_after("ana", "10.0.0.2", 3.0) == 1  # the third locks the user, from any address
    assert t.retry_after("bia", "10.0.0.1", 3.0) == 0  # another user from the same address is not
    t.failed("ana", "10.0.0.1", 4.0)
    assert t.retry_after("ANA", "x", 4.0) == 2  # doubled; user names compare case-insensitively
    for n in range(20):
        t.failed("ana", "10.0.0.1", 10.0 + n)
    assert t.retry_after("ana", "x", 29.0) == 60  # capped


def test_success_clears_the_user_but_not_a_spraying_address() -> None:
    t = LoginThrottle(user_free=2, address_free=3, base_s=10.0)
    for i, user in enumerate(["a", "b", "c", "d"]):  # one address trying many users
        t.failed(user, "10.9.9.9", float(i))
    assert t.retry_after("zé", "10.9.9.9", 4.0) > 0  # the address is locked for everyone it tries
    t.failed("a", "10.0.0.1", 5.0)
    t.failed("a", "10.0.0.1", 5.0)
    t.failed("a", "10.0.0.1", 5.0)
    assert t.retry_after("a", "10.0.0.5", 6.0) > 0
    t.succeeded("a")
    assert t.retry_after("a", "10.0.0.5", 6.0) == 0
    assert t.retry_after("a", "10.9.9.9", 6.0) > 0


def test_invented_user_names_cannot_grow_memory() -> None:
    t = LoginThrottle()
    for i in range(MAX_KEYS + 500):
        t.failed(f"user{i}", "10.0.0.1", 0.0)
    assert len(t._records) <= MAX_KEYS


@pytest.mark.asyncio
async def test_token_endpoint_answers_429_with_retry_after_to_a_guesser() -> None:
    users = [User(username="ana", role="viewer", password_hash=hash_password("certa")),
             User(username="bia", role="viewer", password_hash=hash_password("outra"))]
    app = create_app(Settings(jwt_secret=JWT_SECRET, users=users, ingest_enabled=False, rollup_enabled=False,
                              aneel_sync_enabled=False, ons_sync_enabled=False, alerts_enabled=False,
                              influx_manage_schema=False))
    async with AsyncTestClient(app) as client:
        async def login(user: str, password: str) -> Any:
            return await client.post("/api/v1/auth/token", json={"username": user, "password": password})

        for _ in range(5):
            assert (await login("ana", "errada")).status_code == 401
        locked = await login("ana", "certa")  # right password, but during the lock-out
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) >= 1
        assert "Muitas tentativas" in locked.json()["detail"]
        assert (await login("bia", "outra")).status_code == 200  # others are not affected
