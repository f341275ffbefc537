"""An InfluxDB with authentication on (``auth-enabled = true``, an admin user), and a backend bound to it.

The console's safety rests on InfluxDB refusing the read-only user anything but reading, which only an
authenticating server does; the session's ordinary ``influx`` (no authentication) serves every other test.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from backend.settings import Settings
from devstack.influxdb import InfluxService, influxd_binary
from devstack.processes import ServiceNotInstalledError

ADMIN = ("admin", "admin-secret-1")
RO_PASSWORD = "console-secret-1"
JWT = "consultas-test-secret-" + "c" * 20


@pytest.fixture(scope="session")
def secure_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxService]:
    """An influxd with authentication on and the admin ``ADMIN`` (started once for the session)."""
    try:
        influxd_binary()
    except ServiceNotInstalledError as exc:
        pytest.fail(f"{exc}. The tests need the real services: run `bash scripts/setup.sh`.", pytrace=False)
    service = InfluxService(tmp_path_factory.mktemp("influxdb-auth"), admin=ADMIN)
    service.start(timeout=60)
    yield service
    service.stop()


def console_settings(influx: InfluxService, db: str, **overrides: Any) -> Settings:
    """An API-only backend on ``db`` whose InfluxDB user is the admin and whose console user is ``ro_<db>``."""
    base: dict[str, Any] = dict(
        influx_url=influx.url, influx_db=db, influx_username=ADMIN[0], influx_password=ADMIN[1],
        influx_readonly_username=f"ro_{db}", influx_readonly_password=RO_PASSWORD, jwt_secret=JWT,
        ingest_enabled=False, rollup_enabled=False, aneel_sync_enabled=False, alerts_enabled=False,
        ons_sync_enabled=False, log_level="WARNING")
    base.update(overrides)
    return Settings(**{k: v for k, v in base.items() if k in Settings.__struct_fields__})


def auth(client: AsyncTestClient[Any], role: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {client.app.state.authenticator.issue('tester', role)}"}


def drop(influx: InfluxService, db: str) -> None:
    """Remove a test's database and its console user."""
    influx.query(f'DROP DATABASE "{db}"', epoch=None)
    if any(u["user"] == f"ro_{db}" for u in influx.rows("SHOW USERS", epoch=None)):
        influx.query(f'DROP USER "ro_{db}"', epoch=None)


def readings(n: int = 50) -> list[str]:
    """``n`` raw readings of two devices, one per second, starting an hour ago."""
    start = (int(time.time()) - 3600) * 1000
    return [f"readings,site=s,gateway=g,device=00000000000000a{i % 2} p={i},energy_mwh={i * 10}i {start + i * 1000}"
            for i in range(n)]


@pytest_asyncio.fixture
async def console(secure_influx: InfluxService, unique_id: str) -> AsyncIterator[AsyncTestClient[Any]]:
    """The backend (lifespan: schema and console user created) on a fresh database with 50 readings."""
    settings = console_settings(secure_influx, unique_id, influxql_max_rows=20)
    async with AsyncTestClient(create_app(settings)) as client:
        secure_influx.write(unique_id, readings())
        yield client
    drop(secure_influx, unique_id)
