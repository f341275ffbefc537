"""Backend test helpers: settings bound to the session broker/influxd, an in-process app, a real
``python -m backend`` subprocess (for kill -9), an MQTT 5 publisher that waits for PUBACKs, reading factories.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import paho.mqtt.client as paho
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient
from paho.mqtt.enums import CallbackAPIVersion

from backend.api.app import create_app
from backend.settings import Settings
from devstack.influxdb import InfluxService
from devstack.mosquitto import MosquittoService
from devstack.processes import HOST, free_port
from protocol import mqtt
from protocol.mqtt import Reading, ReadingBatch

JWT_SECRET = "test-secret-" + "x" * 24
REPO = Path(__file__).resolve().parents[2]


_SESSIONS: list[tuple[str, int, str]] = []
"""(host, port, client id) of every backend session a test created, purged after the test."""


def purge_session(host: str, port: int, client_id: str) -> None:
    """Remove a persistent session from the broker (connect with clean start and no expiry, then leave).

    Otherwise every finished test leaves a session (with a shared subscription) that the session broker keeps
    queueing into for the rest of the run."""
    done = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.on_connect = lambda *a: done.set()
    try:
        c.connect(host, port, clean_start=True)
    except OSError:
        return
    c.loop_start()
    done.wait(3)
    c.disconnect()
    c.loop_stop()


@pytest.fixture(autouse=True)
def _purge_backend_sessions() -> Iterator[None]:
    yield
    while _SESSIONS:
        purge_session(*_SESSIONS.pop())


def make_settings(broker: MosquittoService, influx: InfluxService, uid: str, **overrides: Any) -> Settings:
    """Settings for one test: its own database and client id; fast flushes and rollups."""
    base: dict[str, Any] = dict(
        mqtt_host=broker.host, mqtt_port=broker.port, influx_url=influx.url, influx_db=uid,
        mqtt_client_id=f"be-{uid}", mqtt_share_group=f"g-{uid}", jwt_secret=JWT_SECRET,
        rollup_interval_s=0.2, rollup_settle_s=0.1, ingest_flush_ms=20, log_level="WARNING",
        aneel_sync_enabled=False, alerts_enabled=False,  # scheduled jobs: no traffic beyond 127.0.0.1 here
        ons_sync_enabled=False,
    )
    base.update(overrides)
    settings = Settings(**base)
    _SESSIONS.append((broker.host, broker.port, settings.resolved_client_id()))
    return settings


def device_id(i: int) -> str:
    return f"{i:016x}"


def reading(device: str, seq: int, ts: int, *, boot: int = 1, p: float = 100.0, energy: int | None = None) -> Reading:
    return Reading(device=device, boot=boot, seq=seq, ts=ts, vrms=127.0 + (seq % 7) / 10, irms=1.5, p=p, s=p * 1.1,
                   pf=0.9, freq=60.0, energy_mwh=energy if energy is not None else 1000 + seq * 10)


def batch_bytes(site: str, gateway: str, readings: list[Reading]) -> bytes:
    return mqtt.json_encoder.encode(ReadingBatch(site=site, gateway=gateway, readings=readings))


class Publisher:
    """A paho MQTT 5 client that publishes QoS 1 and can wait until the broker acknowledged everything."""

    def __init__(self, broker: MosquittoService, client_id: str | None = None, *, username: str = "",
                 password: str = "", port: int | None = None) -> None:
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{secrets.token_hex(4)}",
                                   protocol=paho.MQTTv5)
        if username:
            self._client.username_pw_set(username, password)
        self._client.max_inflight_messages_set(200)
        self._client.max_queued_messages_set(0)
        self._lock = threading.Lock()
        self._published = 0
        self._acked = 0
        self.refused: list[tuple[int, int]] = []
        self._connected = threading.Event()
        self.connect_reason: Any = None
        self._client.on_publish = self._on_publish
        self._client.on_connect = self._on_connect
        self._client.connect(broker.host, port or broker.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("publisher did not connect")

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connect_reason = reason
        self._connected.set()

    def _on_publish(self, c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:  # never held while calling into paho (paho calls us with its own locks held)
            self._acked += 1
            if reason.is_failure:
                self.refused.append((mid, reason.value))

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> int:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            with self._lock:
                self._published += 1
        return info.mid

    def wait_all_acked(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                left = self._published - self._acked
            if left <= 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{left} publishes not acknowledged by the broker")
            time.sleep(0.01)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def publisher_factory() -> Iterator[Callable[..., Publisher]]:
    made: list[Publisher] = []

    def make(broker: MosquittoService, **kwargs: Any) -> Publisher:
        p = Publisher(broker, **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest_asyncio.fixture
async def app_client(broker: MosquittoService, influx: InfluxService,
                     unique_id: str) -> AsyncIterator[AsyncTestClient[Any]]:
    """The backend app in-process (lifespan running: ingest + rollups) against the session services."""
    app = create_app(make_settings(broker, influx, unique_id))
    async with AsyncTestClient(app) as client:
        assert await app.state.services.ingest.bridge.wait_connected(10), "backend did not connect to the broker"
        yield client


def token(client: AsyncTestClient[Any], role: str = "viewer") -> dict[str, str]:
    """Authorization header with a fresh token for ``role``."""
    return {"Authorization": f"Bearer {client.app.state.authenticator.issue('tester', role)}"}


def count_points(influx: InfluxService, db: str, rp: str = "raw", where: str = "") -> int:
    """Points whose every field is visible. While a write is in flight InfluxDB 1.x shows a point's fields one by
    one, so counting one field could let a test read the next moment a row whose other fields are still null
    (seen in CI); the smallest of the per-field counts only reaches N once N whole points are there."""
    rows = influx.rows(f'SELECT count(*) FROM "{db}"."{rp}"."readings"{where}', db=db)
    # a field InfluxDB knows of but has no visible value for yet counts as null
    counts = [int(v or 0) for k, v in rows[0].items() if k.startswith("count_")] if rows else []
    return min(counts, default=0)


def distinct_keys(influx: InfluxService, db: str) -> set[tuple[str, int, int]]:
    rows = influx.rows(f'SELECT seq, boot FROM "{db}"."raw"."readings" GROUP BY device', db=db)
    return {(r["device"], r["boot"], r["seq"]) for r in rows}


class BackendProcess:
    """``python -m backend`` as a real subprocess (its own process group), for kill -9 tests."""

    def __init__(self, settings: Settings, workdir: Path, name: str = "backend") -> None:
        self.settings = settings
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
        raw = msgspec.to_builtins(self.settings)
        for key, value in raw.items():
            if key == "users":
                env["BACKEND_USERS"] = msgspec.json.encode(value).decode()
            else:
                env[f"BACKEND_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        env["BACKEND_HOST"] = HOST
        env["BACKEND_PORT"] = str(self.port)
        return env

    def start(self, timeout: float = 30.0) -> None:
        command = [sys.executable, "-m", "backend"]
        setpriv = shutil.which("setpriv")
        if setpriv:  # SIGTERM the backend if the test process dies without its teardown (e.g. a timeout)
            command = [setpriv, "--pdeathsig", "TERM", "--", *command]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command, cwd=REPO, env=self.env(),
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://{HOST}:{self.port}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"backend not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def ready(self) -> dict[str, Any]:
        return httpx.get(f"http://{HOST}:{self.port}/ready", timeout=5).json()  # type: ignore[no-any-return]

    def metrics(self) -> str:
        return httpx.get(f"http://{HOST}:{self.port}/metrics", timeout=5).text

    def written(self) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("cds_ingest_readings_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture
def backend_process(tmp_path: Path) -> Iterator[Callable[..., BackendProcess]]:
    made: list[BackendProcess] = []

    def make(settings: Settings, name: str = "backend") -> BackendProcess:
        p = BackendProcess(settings, tmp_path, name)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
