"""End to end: simulated meter -> frame codec -> msgspec payload -> real Mosquitto -> subscriber -> line protocol ->
real InfluxDB -> InfluxQL returns the reading, value for value.

The gateway and backend roles here are the smallest faithful versions of the documented rules, written with the
project's own building blocks (``protocol.frames``, ``protocol.mqtt``, ``backend.lineprotocol``):

- gateway: decode the meter's bytes, timestamp each READING from the meter's uptime (docs/protocol.md §3, "Time"),
  publish one ``ReadingBatch`` with QoS 1 and, once the broker PUBACKed it, send the meter a cumulative ACK;
- backend: an MQTT 5 shared subscription with a persistent session and manual acknowledgement, which writes the
  batch to InfluxDB and acknowledges the message only after ``/write`` answered 204 (docs/architecture.md,
  reliability model).

The meter's ground truth (``MeterModel.produced``) is what InfluxDB must return. Bidirectional metering: an old
(import-only, READING) meter and a new solar one (READING2, exporting at noon) flow side by side, and so does an
old gateway's payload without the export field; InfluxDB holds ``energy_export_mwh`` for the new meter and 0 for
the old ones.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from backend.store import lineprotocol
from devstack.influxdb import InfluxService
from devstack.mosquitto import MosquittoService
from protocol import frames, mqtt
from sim.meter import MeterModel
from sim.solar import solar_household

WaitFor = Callable[..., Any]

START_MS = 1_763_715_600_000  # 2025-11-21 06:00 in São Paulo: the morning shower peak
GATEWAY = "gw-1"
U32 = 0xFFFFFFFF


class GatewayRole:
    """Meter bytes in, MQTT readings out: the codec, duplicate suppression by (boot, seq), the uptime -> wall-clock
    mapping and the cumulative ACK of docs/protocol.md §3. "Committed" here means kept in ``self.readings``."""

    def __init__(self) -> None:
        self.decoder = frames.Decoder()
        self.hello: frames.Hello | None = None
        self.errors: list[frames.FrameError] = []
        self.readings: list[mqtt.Reading] = []
        self._seen: set[int] = set()
        self._acked = 0

    def feed(self, data: bytes, now_ms: int) -> list[mqtt.Reading]:
        """Decode a chunk that arrived at ``now_ms``; return the readings not seen before, timestamped."""
        items = self.decoder.feed(data)
        self.errors += [item for item in items if isinstance(item, frames.FrameError)]
        fresh: list[mqtt.Reading] = []
        latest: int | None = None
        for item in items:
            if isinstance(item, frames.Hello):
                self.hello, self._seen, self._acked = item, set(), 0
            elif isinstance(item, frames.Reading):
                latest = item.uptime_ms  # the last READING of the chunk left the meter at now_ms
        for item in items:
            if isinstance(item, frames.Reading) and item.seq not in self._seen:
                assert self.hello is not None and latest is not None, "a READING before any HELLO"
                ts = now_ms - ((latest - item.uptime_ms) & U32)
                fresh.append(mqtt.reading_from_frame(self.hello.device, self.hello.boot_count, ts, item))
                self._seen.add(item.seq)
        self.readings += fresh
        return fresh

    def ack(self) -> bytes:
        """The cumulative ACK for every reading committed so far (b"" when there is nothing new)."""
        if self.hello is None or self._acked + 1 not in self._seen:
            return b""
        while self._acked + 1 in self._seen:
            self._acked += 1
        return frames.encode(frames.Ack(self.hello.boot_count, self._acked))


class BackendRole:
    """Persistent MQTT 5 session on a shared subscription; InfluxDB write first, then the manual PUBACK."""

    def __init__(self, broker: MosquittoService, influx: InfluxService, db: str, site: str, client_id: str) -> None:
        self.influx = influx
        self.db = db
        self.errors: list[BaseException] = []
        self.acked = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._topic = f"$share/{client_id}/{mqtt.ROOT}/{site}/+/up/readings"
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, manual_ack=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not flags.session_present:
            client.subscribe(self._topic, qos=1)

    def wait_subscribed(self, wait_for: WaitFor) -> None:
        wait_for(self._subscribed.is_set, what=f"SUBACK for {self._topic}")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            site, gateway, _ = mqtt.split_topic(msg.topic)
            batch = mqtt.batch_decoder.decode(msg.payload)
            assert (batch.site, batch.gateway) == (site, gateway), "payload names another gateway than its topic"
            self.influx.write(
                self.db, lineprotocol.reading_lines(site, gateway, batch.readings), precision=lineprotocol.PRECISION
            )
        except Exception as exc:  # recorded and asserted on by the test; no ack, so the broker keeps it
            with self._lock:
                self.errors.append(exc)
            return
        client.ack(msg.mid, msg.qos)
        with self._lock:
            self.acked += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Publisher:
    """The gateway's MQTT side: QoS 1 publishes, counting PUBACKs."""

    def __init__(self, broker: MosquittoService, client_id: str) -> None:
        self.pubacks = 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.on_publish = self._on_publish
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            self.pubacks += 1

    def publish(self, batch: mqtt.ReadingBatch, wait_for: WaitFor) -> None:
        before = self.pubacks
        self.client.publish(
            mqtt.readings_topic(batch.site, batch.gateway), mqtt.json_encoder.encode(batch), qos=1
        )
        wait_for(lambda: self.pubacks > before, what="the broker's PUBACK")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def roles(
    broker: MosquittoService, influx: InfluxService, unique_id: str, wait_for: WaitFor
) -> Iterator[tuple[Publisher, BackendRole]]:
    influx.create_database(unique_id)
    backend = BackendRole(broker, influx, unique_id, unique_id, f"backend-{unique_id}")
    backend.wait_subscribed(wait_for)
    publisher = Publisher(broker, f"gateway-{unique_id}")
    yield publisher, backend
    publisher.close()
    backend.close()


def _meter(unique_id: str) -> MeterModel:
    device = hashlib.blake2b(unique_id.encode(), digest_size=8).hexdigest()
    return MeterModel(device, start_ms=START_MS, seed=unique_id, report_period_ms=1000)


def _run(meter: MeterModel, gateway: GatewayRole, until_ms: int) -> list[mqtt.Reading]:
    """Step the meter from one spontaneous output to the next, as a serial port would deliver them, ACKing what the
    gateway committed; return the new readings."""
    out: list[mqtt.Reading] = []
    while (now := meter.next_deadline_ms()) <= until_ms:
        out += gateway.feed(meter.advance(now), now)
        out += gateway.feed(meter.receive(gateway.ack(), now), now)
    return out


def _expected_row(site: str, r: mqtt.Reading) -> dict[str, Any]:
    return {
        "time": r.ts, "site": site, "gateway": GATEWAY, "device": r.device,
        "vrms": r.vrms, "irms": r.irms, "p": r.p, "s": r.s, "pf": r.pf, "freq": r.freq,
        "energy_mwh": r.energy_mwh, "boot": r.boot, "seq": r.seq, "flags": r.flags,
        "energy_export_mwh": r.energy_export_mwh,
    }  # fmt: skip


def _stored(influx: InfluxService, db: str, site: str) -> list[dict[str, Any]]:
    return influx.rows(f"SELECT * FROM {lineprotocol.READINGS_MEASUREMENT} WHERE site = '{site}' ORDER BY time", db=db)


def test_meter_reading_reaches_influxdb(
    roles: tuple[Publisher, BackendRole], influx: InfluxService, unique_id: str, wait_for: WaitFor
) -> None:
    publisher, backend = roles
    meter, gateway = _meter(unique_id), GatewayRole()
    readings = _run(meter, gateway, START_MS + 10_000)
    assert gateway.errors == []
    assert [r.seq for r in readings] == list(range(1, 11))
    # the gateway's timestamps are the meter's true measuring instants
    assert [(r.boot, r.seq, r.ts) for r in readings] == [(p.boot, p.seq, p.t_ms) for p in meter.produced]

    assert meter.acked[1] == 10 and not meter.queue  # the meter got its ACKs and resent nothing
    assert not any(r.flags & frames.FLAG_RESENT for r in readings)

    publisher.publish(mqtt.ReadingBatch(site=unique_id, gateway=GATEWAY, readings=readings), wait_for)

    # Read only after the ack, which follows InfluxDB's 204: while a write is in flight InfluxDB 1.x shows a
    # point's fields one by one (seen in CI: p and vrms there, freq, boot and energy_mwh still null), so polling
    # the table until it is non-empty can catch half-written rows.
    wait_for(lambda: backend.acked == 1, what="the backend's manual ack")
    assert backend.errors == []
    assert _stored(influx, unique_id, unique_id) == [_expected_row(unique_id, r) for r in readings]
    assert any(r.p > 0 for r in readings) and all(r.vrms > 100 for r in readings)


def test_replayed_batch_is_stored_once(
    roles: tuple[Publisher, BackendRole], influx: InfluxService, unique_id: str, wait_for: WaitFor
) -> None:
    """At-least-once delivery upstream, exactly-once in storage: a batch sent twice leaves one point per reading."""
    publisher, backend = roles
    readings = _run(_meter(unique_id), GatewayRole(), START_MS + 5_000)
    batch = mqtt.ReadingBatch(site=unique_id, gateway=GATEWAY, readings=readings)
    publisher.publish(batch, wait_for)
    publisher.publish(batch, wait_for)
    wait_for(lambda: backend.acked == 2, what="both deliveries written and acknowledged")
    assert backend.errors == []
    assert _stored(influx, unique_id, unique_id) == [_expected_row(unique_id, r) for r in readings]


def test_broker_restart_with_backend_offline_loses_nothing(
    broker: MosquittoService,
    roles: tuple[Publisher, BackendRole],
    influx: InfluxService,
    unique_id: str,
    wait_for: WaitFor,
) -> None:
    """Batches PUBACKed while the backend is away survive a broker restart and reach InfluxDB when it returns."""
    publisher, backend = roles
    backend.close()
    meter, gateway = _meter(unique_id), GatewayRole()
    sent: list[mqtt.Reading] = []
    for minute in range(1, 4):
        readings = _run(meter, gateway, START_MS + minute * 60_000)
        publisher.publish(mqtt.ReadingBatch(site=unique_id, gateway=GATEWAY, readings=readings), wait_for)
        sent += readings
    broker.restart()
    returned = BackendRole(broker, influx, unique_id, unique_id, f"backend-{unique_id}")
    try:
        wait_for(lambda: returned.acked == 3, what=lambda: f"3 queued batches (acked {returned.acked})")
        assert returned.errors == []
    finally:
        returned.close()
    assert len(sent) == 180
    assert _stored(influx, unique_id, unique_id) == [_expected_row(unique_id, r) for r in sent]


NOON_MS = 1_763_737_200_000  # 2025-11-21 12:00 in São Paulo: a clear-sky PV array out-produces the house


def test_old_and_new_meters_side_by_side_store_their_export_registers(
    roles: tuple[Publisher, BackendRole], influx: InfluxService, unique_id: str, wait_for: WaitFor
) -> None:
    """A firmware 1.0 meter (READING: import only) and a solar firmware 1.1 meter (READING2) on one gateway at
    noon, plus an old gateway's payload without the export field: all stored, export only where it was measured."""
    publisher, backend = roles
    old_dev = hashlib.blake2b(f"{unique_id}/old".encode(), digest_size=8).hexdigest()
    new_dev = hashlib.blake2b(f"{unique_id}/new".encode(), digest_size=8).hexdigest()
    old = MeterModel(old_dev, start_ms=NOON_MS, seed=f"{unique_id}/old", bidirectional=False)
    new = MeterModel(new_dev, start_ms=NOON_MS, load=solar_household(f"{unique_id}/new", 220, kwp=8.0))
    old_readings = _run(old, GatewayRole(), NOON_MS + 10_000)
    new_readings = _run(new, GatewayRole(), NOON_MS + 10_000)
    assert all(type(p.frame) is frames.Reading for p in old.produced)
    assert all(type(p.frame) is frames.Reading2 for p in new.produced)
    assert all(r.p < 0 for r in new_readings)  # exporting at noon: signed power all the way
    assert new_readings[-1].energy_export_mwh == new.export_mwh > 0
    assert all(r.energy_export_mwh == 0 for r in old_readings)
    readings = old_readings + new_readings
    publisher.publish(mqtt.ReadingBatch(site=unique_id, gateway=GATEWAY, readings=readings), wait_for)

    # an old gateway's payload: the Reading as it was before the export field existed
    legacy = mqtt.json_encoder.encode(
        {"site": unique_id, "gateway": GATEWAY, "v": 1, "readings": [
            {k: v for k, v in msgspec.structs.asdict(r).items() if k != "energy_export_mwh"}
            for r in _run(MeterModel(old_dev, start_ms=NOON_MS + 20_000, seed="legacy", boot_count=1,
                                     bidirectional=False), GatewayRole(), NOON_MS + 23_000)
        ]}
    )  # fmt: skip
    before = publisher.pubacks
    publisher.client.publish(mqtt.readings_topic(unique_id, GATEWAY), legacy, qos=1)
    wait_for(lambda: publisher.pubacks > before, what="the broker's PUBACK of the legacy payload")

    wait_for(lambda: backend.acked == 2, what="both batches written and acknowledged")
    assert backend.errors == []
    rows = _stored(influx, unique_id, unique_id)
    def order(row: dict[str, Any]) -> tuple[int, str]:
        return row["time"], row["device"]

    first = sorted((row for row in rows if row["boot"] == 1), key=order)  # the new gateway's batch
    assert first == sorted((_expected_row(unique_id, r) for r in readings), key=order)
    by_device = {dev: [row for row in rows if row["device"] == dev] for dev in (old_dev, new_dev)}
    assert {row["energy_export_mwh"] for row in by_device[old_dev]} == {0}
    assert len([row for row in by_device[old_dev] if row["boot"] == 2]) == 3  # the legacy payload, export 0
    exports = [row["energy_export_mwh"] for row in by_device[new_dev]]
    assert exports == sorted(exports) and exports[-1] == new.export_mwh
    assert all(row["p"] < 0 for row in by_device[new_dev])
