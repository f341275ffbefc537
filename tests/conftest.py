"""Fixtures shared by the whole CDS test suite: real Mosquitto and InfluxDB, unique ids, polling helpers.

Services (real processes from Debian's packages, see devstack/mosquitto.py and devstack/influxdb.py; missing binaries
FAIL the run with a hint to run ``bash scripts/setup.sh`` — CI must never pass by skipping them):

- ``mosquitto`` / ``influxdb`` (session): one broker and one influxd for the whole run, started once in a
  temporary folder on free 127.0.0.1 ports. The broker runs with the shipped deploy/mosquitto/mosquitto.conf
  queue and persistence settings.
- ``broker`` / ``influx`` (function): the same objects, restarted first if an earlier test stopped or killed them.
  Use these in tests; a fault test may call ``broker.stop()``, ``broker.kill()``, ``broker.start()``,
  ``broker.restart()`` (same for ``influx``) mid-test — the ports and data stay the same.
- ``mosquitto_factory`` (function): ``mosquitto_factory(**kwargs) -> MosquittoService`` starts an extra broker
  (kwargs as MosquittoService: ``config_extra``, ``acl_file``, ``password_file``, ``allow_anonymous``,
  ``dynamic_security_file``), stopped after the test.

Helpers:

- ``unique_id``: e.g. ``broker_restart_keeps_queue_3f9a1c`` — lowercase, unique per test, valid as an MQTT topic
  level, an InfluxDB database name (even unquoted) and a CDS site/gateway id (protocol.ids.ID_PATTERN).
- ``wait_for(predicate, timeout=10, interval=0.01, what="...")``: poll until ``predicate()`` is truthy and
  return that value; fail the test with ``what`` (a string, or a callable evaluated at failure time) and the
  last value when the deadline passes. ``wait_for_async``
  is the same for asyncio tests (``await wait_for_async(...)``; the predicate may be sync or async). The suite
  synchronises with these, never with sleeps.
- ``mqtt_recorder``: ``mqtt_recorder(topic_filter, qos=1) -> MqttRecorder`` subscribes a paho client on
  ``broker`` and records every message (``.messages``, ``.payloads``, ``.wait_count(n)``); closed after the test.
- ``figure``: ``figure(text)`` records a measured figure (firmware accuracy, sizes, rates), printed in the terminal
  summary so CI logs show it. It travels as a user property of the test's report, which pytest-xdist sends from
  its workers to the controller that prints the summary (``scripts/test.sh`` runs the suite on every core).

Tests that use a service fixture get the ``services`` marker automatically (``-m "not services"`` skips them).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devstack.influxdb import InfluxService, influxd_binary
from devstack.mosquitto import MosquittoService, mosquitto_binary
from devstack.processes import ServiceNotInstalledError
from protocol.ids import is_ident

T = TypeVar("T")

_SERVICE_FIXTURES = frozenset({"mosquitto", "influxdb", "broker", "influx", "mosquitto_factory", "mqtt_recorder"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


_FIGURE = "figure"
_FIGURES: list[str] = []


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    def record(text: str) -> None:
        request.node.user_properties.append((_FIGURE, text))

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _FIGURES.extend(str(value) for key, value in report.user_properties if key == _FIGURE)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("measured figures")
        for line in _FIGURES:
            terminalreporter.line(line)


def _require(binary: Callable[[], str]) -> None:
    try:
        binary()
    except ServiceNotInstalledError as exc:
        pytest.fail(f"{exc}. The tests need the real services: run `bash scripts/setup.sh`.", pytrace=False)


# --- services -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoService]:
    """The session's Mosquitto broker (started once). Prefer ``broker`` in tests."""
    _require(mosquitto_binary)
    service = MosquittoService(tmp_path_factory.mktemp("mosquitto"))
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxService]:
    """The session's InfluxDB 1.x server (started once). Prefer ``influx`` in tests."""
    _require(influxd_binary)
    service = InfluxService(tmp_path_factory.mktemp("influxdb"))
    service.start(timeout=60)
    yield service
    service.stop()


def running_broker(mosquitto: MosquittoService) -> MosquittoService:
    """The session broker, started again if a fault test stopped it (module-scoped fixtures call this; tests take
    ``broker``)."""
    if not mosquitto.running:
        mosquitto.start()
    return mosquitto


def running_influx(influxdb: InfluxService) -> InfluxService:
    """The session influxd, started again if a fault test stopped it (module-scoped fixtures call this; tests take
    ``influx``)."""
    if not influxdb.running:
        influxdb.start(timeout=60)
    return influxdb


def module_db(stem: str) -> str:
    """A database name unique to one run of a module (for its module-scoped fixtures; ``unique_id`` is per test)."""
    db = f"{stem}_{secrets.token_hex(3)}"
    assert is_ident(db), db
    return db


@pytest.fixture
def broker(mosquitto: MosquittoService) -> MosquittoService:
    """The session broker, guaranteed running at the start of the test (restarted if a fault test stopped it)."""
    return running_broker(mosquitto)


@pytest.fixture
def influx(influxdb: InfluxService) -> InfluxService:
    """The session influxd, guaranteed running at the start of the test (restarted if a fault test stopped it)."""
    return running_influx(influxdb)


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoService]]:
    """Start extra brokers with custom options: ``mosquitto_factory(config_extra=..., acl_file=...)``."""
    _require(mosquitto_binary)
    started: list[MosquittoService] = []

    def make(**kwargs: Any) -> MosquittoService:
        service = MosquittoService(tmp_path / f"mosquitto-{len(started)}", **kwargs)
        started.append(service)
        service.start()
        return service

    yield make
    for service in started:
        service.stop()


# --- ids and polling -----------------------------------------------------------------------------------------


@pytest.fixture
def unique_id(request: pytest.FixtureRequest) -> str:
    """A short lowercase id unique to this test run, matching ``^[a-z][a-z0-9_]{0,62}$``."""
    name = re.sub(r"^test_?", "", request.node.name.lower())
    stem = re.sub(r"[^a-z0-9]+", "_", name).strip("_")[:40].rstrip("_") or "t"
    if not stem[0].isalpha():
        stem = "t" + stem
    ident = f"{stem}_{secrets.token_hex(3)}"
    assert is_ident(ident), ident
    return ident


def _describe(predicate: Callable[..., Any], what: str | Callable[[], str]) -> str:
    if callable(what):
        return what()
    return what or getattr(predicate, "__qualname__", repr(predicate))


def poll_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str | Callable[[], str] = "",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout} s waiting for {_describe(predicate, what)}; last value: {value!r}",
                pytrace=True,
            )
        time.sleep(interval)


async def poll_until_async(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str | Callable[[], str] = "",
) -> T:
    """What the ``wait_for_async`` fixture returns, importable for module-scoped fixtures (which cannot use it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout} s waiting for {_describe(predicate, what)}; last value: {value!r}",
                pytrace=True,
            )
        await asyncio.sleep(interval)


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """``wait_for(predicate, timeout=10, interval=0.01, what="...")`` -> the predicate's first truthy value."""
    return poll_until


@pytest.fixture
def wait_for_async() -> Callable[..., Any]:
    """``await wait_for_async(predicate, ...)``: like ``wait_for`` without blocking the event loop."""
    return poll_until_async


# --- MQTT observation ----------------------------------------------------------------------------------------


class MqttRecorder:
    """A paho subscriber that records every message matching one topic filter, in arrival order.

    An observer, not a durable consumer: clean session, resubscribes after a broker restart, misses what was
    published while it was disconnected.
    """

    def __init__(self, host: str, port: int, topic_filter: str, qos: int = 1) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topic_filter = topic_filter
        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retain)
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cds-recorder-{secrets.token_hex(4)}")
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos)
        self._client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise TimeoutError(f"no SUBACK for {topic_filter!r} from {host}:{port} within 10 s")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    @property
    def payloads(self) -> list[bytes]:
        with self._lock:
            return [payload for _, payload, _ in self.messages]

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def wait_count(self, n: int, timeout: float = 10.0) -> list[tuple[str, bytes, bool]]:
        """Wait until at least ``n`` messages arrived; return them all."""
        poll_until(
            lambda: self.count() >= n,
            timeout,
            what=lambda: f"{n} messages on {self.topic_filter!r} (have {self.count()})",
        )
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def mqtt_recorder(broker: MosquittoService) -> Iterator[Callable[..., MqttRecorder]]:
    """``mqtt_recorder(topic_filter, qos=1)`` -> a subscribed :class:`MqttRecorder` on ``broker``."""
    recorders: list[MqttRecorder] = []

    def make(topic_filter: str, qos: int = 1) -> MqttRecorder:
        recorder = MqttRecorder(broker.host, broker.port, topic_filter, qos)
        recorders.append(recorder)
        return recorder

    yield make
    for recorder in recorders:
        recorder.close()
