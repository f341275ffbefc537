"""The real-service fixtures work, and the broker settings we ship do not lose queued messages.

The broker-level proof of the reliability model (docs/architecture.md): Mosquitto's default
``max_queued_messages 1000`` silently drops what an offline persistent session cannot queue, while the
shipped deploy/mosquitto/mosquitto.conf keeps all of it, also across a graceful broker restart.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devstack.influxdb import InfluxError, InfluxService
from devstack.mosquitto import MosquittoService, shipped_mosquitto_options
from devstack.processes import ServiceNotInstalledError, find_binary
from protocol.ids import is_ident

WaitFor = Callable[..., Any]


class Client:
    """A paho client for these tests: records received payloads and counts PUBACKed publishes."""

    def __init__(self, broker: MosquittoService, client_id: str, *, persistent: bool = False, v5: bool = False) -> None:
        self.received: list[bytes] = []
        self.acked = 0
        self._lock = threading.Lock()
        self._subacks = 0
        self.connected = threading.Event()
        if v5:
            self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        self.mqtt.max_inflight_messages_set(100)
        self.mqtt.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.mqtt.on_message = self._on_message
        self.mqtt.on_publish = self._on_publish
        self.mqtt.on_subscribe = self._on_subscribe
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600 if persistent else 0
            self.mqtt.connect(broker.host, broker.port, keepalive=30, clean_start=not persistent, properties=props)
        else:
            self.mqtt.connect(broker.host, broker.port, keepalive=30)
        self.mqtt.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append(bytes(msg.payload))

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            self.acked += 1

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        with self._lock:
            self._subacks += 1

    def subscribe(self, topic: str, wait_for: WaitFor) -> None:
        self.mqtt.subscribe(topic, qos=1)
        wait_for(lambda: self._subacks > 0, what=f"SUBACK for {topic}")

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(broker: MosquittoService, client_id: str, **kwargs: Any) -> Client:
        client = Client(broker, client_id, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _publish_all(pub: Client, topic: str, n: int, wait_for: WaitFor) -> list[bytes]:
    payloads = [f"msg-{i:06d}".encode() for i in range(n)]
    for payload in payloads:
        pub.mqtt.publish(topic, payload, qos=1)
    wait_for(lambda: pub.acked >= n, timeout=60, what=lambda: f"PUBACK for {n} messages (have {pub.acked})")
    return payloads


def _queue_while_offline(
    broker: MosquittoService, clients: Callable[..., Client], wait_for: WaitFor, uid: str, n: int, v5: bool
) -> list[bytes]:
    """Subscribe a persistent session, take it offline, publish ``n`` QoS 1 messages (all PUBACKed)."""
    topic = f"cds-test/{uid}/up"
    sub = clients(broker, f"sub-{uid}", persistent=True, v5=v5)
    sub.subscribe(topic, wait_for)
    sub.close()
    pub = clients(broker, f"pub-{uid}", v5=v5)
    sent = _publish_all(pub, topic, n, wait_for)
    pub.close()
    return sent


def _drain(
    broker: MosquittoService, clients: Callable[..., Client], wait_for: WaitFor, uid: str, n: int, v5: bool
) -> Client:
    sub = clients(broker, f"sub-{uid}", persistent=True, v5=v5)
    wait_for(lambda: sub.count() >= n, timeout=60, what=lambda: f"{n} queued messages (have {sub.count()})")
    return sub


# --- helpers ---------------------------------------------------------------------------------------------------


def test_missing_binary_names_the_setup_script() -> None:
    with pytest.raises(ServiceNotInstalledError, match=r"bash scripts/setup\.sh"):
        find_binary("cds-no-such-server", "/nonexistent/cds-no-such-server")


def test_unique_id_is_a_valid_site_id_named_after_the_test(unique_id: str) -> None:
    assert is_ident(unique_id)
    assert unique_id.startswith("unique_id_is_a_valid_site_id")


def test_wait_for_fails_with_what_it_waited_for(wait_for: WaitFor) -> None:
    assert wait_for(lambda: 42, timeout=0.1) == 42
    with pytest.raises(pytest.fail.Exception, match="waiting for the impossible; last value: 0"):
        wait_for(lambda: 0, timeout=0.05, what="the impossible")


@pytest.mark.asyncio
async def test_wait_for_async_accepts_sync_and_async_predicates(wait_for_async: WaitFor) -> None:
    calls = 0

    async def ready_on_third_call() -> str:
        nonlocal calls
        calls += 1
        return "ready" if calls >= 3 else ""

    assert await wait_for_async(ready_on_third_call, timeout=5) == "ready"
    assert await wait_for_async(lambda: True, timeout=5) is True
    with pytest.raises(pytest.fail.Exception, match="waiting for nothing"):
        await wait_for_async(lambda: None, timeout=0.05, what="nothing")


# --- broker ----------------------------------------------------------------------------------------------------


def test_test_broker_runs_shipped_queue_settings(broker: MosquittoService) -> None:
    shipped = dict(shipped_mosquitto_options())
    assert int(shipped["max_queued_messages"]) > 1000
    assert shipped["persistence"] == "true"
    config = broker.config_text().splitlines()
    for key in (
        "max_queued_messages",
        "max_queued_bytes",
        "max_inflight_messages",
        "persistence",
        "autosave_interval",
        "persistent_client_expiration",
    ):
        assert f"{key} {shipped[key]}" in config
    assert f"listener {broker.port} 127.0.0.1" in config


def test_broker_round_trips_qos1(
    broker: MosquittoService, clients: Callable[..., Client], wait_for: WaitFor, unique_id: str
) -> None:
    topic = f"cds-test/{unique_id}/x"
    sub = clients(broker, f"sub-{unique_id}")
    sub.subscribe(topic, wait_for)
    pub = clients(broker, f"pub-{unique_id}")
    pub.mqtt.publish(topic, b"hello", qos=1)
    wait_for(lambda: sub.count() == 1, what="the message")
    # The broker sends the PUBACK and the delivery on two sockets read by two client threads: the subscriber can
    # see the message before the publisher's thread has run on_publish, so the PUBACK is waited for on its own.
    wait_for(lambda: pub.acked >= 1, what="the PUBACK")
    assert sub.received == [b"hello"]
    assert pub.acked == 1


def test_mqtt_recorder_sees_retained_and_live_messages(
    broker: MosquittoService, clients: Callable[..., Client], mqtt_recorder: Callable[..., Any], unique_id: str
) -> None:
    pub = clients(broker, f"pub-{unique_id}")
    pub.mqtt.publish(f"cds-test/{unique_id}/status", b"retained", qos=1, retain=True).wait_for_publish(10)
    recorder = mqtt_recorder(f"cds-test/{unique_id}/#")
    pub.mqtt.publish(f"cds-test/{unique_id}/live", b"live", qos=1)
    assert recorder.wait_count(2) == [
        (f"cds-test/{unique_id}/status", b"retained", True),
        (f"cds-test/{unique_id}/live", b"live", False),
    ]
    pub.mqtt.publish(f"cds-test/{unique_id}/status", b"", qos=1, retain=True).wait_for_publish(10)  # clear it


@pytest.mark.parametrize("v5", [False, True], ids=["mqtt311_clean_session_false", "mqtt5_session_expiry"])
def test_broker_restart_keeps_offline_session_queue(
    broker: MosquittoService, clients: Callable[..., Client], wait_for: WaitFor, unique_id: str, v5: bool
) -> None:
    sent = _queue_while_offline(broker, clients, wait_for, unique_id, 1500, v5)
    port = broker.port
    broker.restart()
    assert broker.port == port
    sub = _drain(broker, clients, wait_for, unique_id, len(sent), v5)
    assert sorted(sub.received) == sent


def test_backend_offline_5000_queued_loses_nothing(
    broker: MosquittoService, clients: Callable[..., Client], wait_for: WaitFor, unique_id: str
) -> None:
    """5x Mosquitto's default queue of 1000 is held for an offline persistent session, in order."""
    sent = _queue_while_offline(broker, clients, wait_for, unique_id, 5000, v5=True)
    sub = _drain(broker, clients, wait_for, unique_id, len(sent), v5=True)
    assert sub.received == sent


def test_broker_kill9_after_save_keeps_queue(
    broker: MosquittoService, clients: Callable[..., Client], wait_for: WaitFor, unique_id: str
) -> None:
    sent = _queue_while_offline(broker, clients, wait_for, unique_id, 1200, v5=True)
    broker.save()
    broker.kill()
    assert not broker.running
    broker.start()
    sub = _drain(broker, clients, wait_for, unique_id, len(sent), v5=True)
    assert sub.received == sent


def test_broker_kill9_loses_what_came_after_the_last_autosave(
    mosquitto_factory: Callable[..., MosquittoService],
    clients: Callable[..., Client],
    wait_for: WaitFor,
    unique_id: str,
) -> None:
    """Documents Mosquitto's known gap (deploy/mosquitto/mosquitto.conf, Persistence): there is no per-message
    log, so a crash loses the session and the messages accepted since the last save, PUBACKs notwithstanding.
    If this ever fails, Mosquitto has become crash-safe and the config comment should say so."""
    crashing = mosquitto_factory()
    sent = _queue_while_offline(crashing, clients, wait_for, unique_id, 100, v5=True)
    crashing.kill()
    crashing.start()
    sub = clients(crashing, f"sub-{unique_id}", persistent=True, v5=True)
    wait_for(sub.connected.is_set, what="reconnection")
    sub.subscribe(f"cds-test/{unique_id}/up", wait_for)
    probe = clients(crashing, f"probe-{unique_id}", v5=True)
    probe.mqtt.publish(f"cds-test/{unique_id}/up", b"marker", qos=1)
    wait_for(lambda: b"marker" in sub.received, what="the marker")
    assert len(sent) == 100 and sub.received == [b"marker"]


def test_default_queue_limit_drops_silently(
    mosquitto_factory: Callable[..., MosquittoService],
    clients: Callable[..., Client],
    wait_for: WaitFor,
    unique_id: str,
) -> None:
    """Control for the test above: with Mosquitto's default limit every message is PUBACKed, most are lost."""
    default_broker = mosquitto_factory(config_extra="max_queued_messages 1000")
    sent = _queue_while_offline(default_broker, clients, wait_for, unique_id, 5000, v5=True)
    sub = clients(default_broker, f"sub-{unique_id}", persistent=True, v5=True)
    # the broker delivers the whole (capped) queue right after CONNACK; wait until it went quiet at the cap
    wait_for(lambda: sub.count() >= 1000, what=lambda: f"the capped queue (have {sub.count()})")
    probe = clients(default_broker, f"probe-{unique_id}", v5=True)
    probe.mqtt.publish(f"cds-test/{unique_id}/up", b"marker", qos=1)
    wait_for(lambda: b"marker" in sub.received, what="the marker published after the queue")
    lost = len(sent) - (sub.count() - 1)
    assert lost >= 3000, f"expected the default queue to drop most of {len(sent)} messages, lost {lost}"


def test_factory_broker_with_passwords_and_acl(
    mosquitto_factory: Callable[..., MosquittoService], tmp_path: Path, wait_for: WaitFor, unique_id: str
) -> None:
    """An extra broker with a password file and an ACL: anonymous clients are refused, users confined."""
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "gw", "secret"], check=True)
    acl = tmp_path / "acl"
    acl.write_text(f"user gw\ntopic readwrite cds-test/{unique_id}/#\n", encoding="utf-8")
    secured = mosquitto_factory(password_file=passwords, acl_file=acl, allow_anonymous=False)

    results: dict[str, Any] = {}

    def connect(name: str, username: str | None, password: str | None) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{unique_id}")
        if username is not None:
            client.username_pw_set(username, password)

        def on_connect(c: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
            results.setdefault(name, rc)
            if rc.is_failure:
                c.disconnect()  # no automatic reconnect attempts

        client.on_connect = on_connect
        client.on_message = lambda c, u, m: results.setdefault(f"{name}-msg", m.topic)
        client.connect(secured.host, secured.port, keepalive=30)
        client.loop_start()
        return client

    clients_ = [connect("anon", None, None), connect("wrong", "gw", "nope"), connect("gw", "gw", "secret")]
    try:
        wait_for(lambda: {"anon", "wrong", "gw"} <= results.keys(), what=lambda: f"three CONNACKs, have {results}")
        assert results["anon"].is_failure and results["wrong"].is_failure
        assert not results["gw"].is_failure
        gw = clients_[2]
        gw.subscribe("#", qos=1)  # the ACL filters what it may read
        gw.publish("elsewhere/x", b"denied", qos=1).wait_for_publish(10)
        gw.publish(f"cds-test/{unique_id}/ok", b"allowed", qos=1).wait_for_publish(10)
        wait_for(lambda: "gw-msg" in results, what="the allowed message")
        assert results["gw-msg"] == f"cds-test/{unique_id}/ok"
    finally:
        for client in clients_:
            client.disconnect()
            client.loop_stop()


# --- InfluxDB --------------------------------------------------------------------------------------------------


def test_influx_write_and_query(influx: InfluxService, unique_id: str) -> None:
    influx.create_database(unique_id)
    influx.write(unique_id, ["power,device=a p=1500.5,energy=12i 1700000000000", "power,device=b p=20 1700000001000"])
    rows = influx.rows("SELECT p, energy, device FROM power ORDER BY time", db=unique_id)
    assert rows == [
        {"time": 1700000000000, "p": 1500.5, "energy": 12, "device": "a"},
        {"time": 1700000001000, "p": 20, "energy": None, "device": "b"},
    ]


def test_influx_errors_are_raised(influx: InfluxService, unique_id: str) -> None:
    influx.create_database(unique_id)
    with pytest.raises(InfluxError, match="HTTP 400"):
        influx.write(unique_id, "power,device=a p= 1")
    with pytest.raises(InfluxError, match="database not found"):
        influx.write(f"{unique_id}_missing", "power p=1 1")
    with pytest.raises(InfluxError, match="error parsing query"):
        influx.query("SELECT FROM", db=unique_id)


def test_influx_restart_keeps_data(influx: InfluxService, unique_id: str) -> None:
    influx.create_database(unique_id)
    influx.write(unique_id, [f"power,device=a p={i} {1700000000000 + i}" for i in range(100)])
    url = influx.url
    influx.restart()
    assert influx.url == url
    rows = influx.rows("SELECT count(p) FROM power", db=unique_id)
    assert rows[0]["count"] == 100


def test_influx_kill9_keeps_acknowledged_writes(influx: InfluxService, unique_id: str) -> None:
    """A 204 from /write means the WAL was fsynced (wal-fsync-delay 0s): kill -9 loses nothing accepted."""
    influx.create_database(unique_id)
    influx.write(unique_id, [f"power,device=a p={i} {1700000000000 + i}" for i in range(100)])
    influx.kill()
    assert not influx.running
    influx.start()
    rows = influx.rows("SELECT count(p) FROM power", db=unique_id)
    assert rows[0]["count"] == 100
