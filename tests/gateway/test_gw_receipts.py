"""End-to-end receipts: the real gateway, the real backend (``python -m backend``), real Mosquitto and InfluxDB, and
simulated meters as ground truth (tests/gateway/receiptharness.py). The gateway forgets a reading only after the
backend's receipt, so whatever happens between the two — InfluxDB or the backend away longer than every window, a
broker that crashes after its PUBACK, a stranger in the backend's share group, a batch the backend refuses —
every acknowledged reading ends up in InfluxDB; and with a backend that sends no receipts the gateway falls back to
its replay window and says so."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from gwharness import Collector, GatewayProcess
from paho.mqtt.enums import CallbackAPIVersion
from receiptharness import FAST_RECEIPTS, Backend, Chain, DeletedOnlyWhenStored, check_stored, held

from devstack.influxdb import InfluxService
from devstack.mosquitto import MosquittoService
from protocol import mqtt
from sim.port import VirtualMeter
from sim.runner import MeterRunner

PERIOD_MS = 20


@pytest.fixture
def backend_factory(tmp_path: Path, influx: InfluxService, unique_id: str) -> Iterator[Callable[..., Backend]]:
    made: list[Backend] = []

    def make(broker: MosquittoService, **overrides: Any) -> Backend:
        b = Backend(tmp_path, broker, influx, unique_id, **overrides)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def add_meters(sim: MeterRunner, n: int) -> list[VirtualMeter]:
    return [sim.add_meter(report_period_ms=PERIOD_MS, status_interval_ms=500, queue_capacity=256) for _ in range(n)]


def chain(meters: list[VirtualMeter], gw: GatewayProcess, influx: InfluxService, collector: Collector) -> Chain:
    return Chain(meters, gw, influx, gw.site, collector)


def start_with_receipts(gw: GatewayProcess, backend: Backend, wait_for: Callable[..., Any]) -> None:
    backend.proc.start()
    gw.start()
    wait_for(lambda: gw.status()["queue"]["delivery"] == "receipts", 20,
             what=lambda: f"the first receipt\n{gw.log_tail()}")  # fmt: skip


def test_readings_deleted_only_after_their_receipt_never_before_influxdb_has_them(
    sim: MeterRunner, broker: MosquittoService, influx: InfluxService, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], backend_factory: Callable[..., Backend],
    collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    """Sampled every 0.1 s, with InfluxDB stopped for longer than every window in between: no reading leaves the
    gateway before InfluxDB has it, and every one leaves once it has."""
    meters = add_meters(sim, 2)
    backend = backend_factory(broker, ingest_retry_max_s=0.5)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")], queue=FAST_RECEIPTS)
    c = chain(meters, gw, influx, collector_factory(unique_id))
    start_with_receipts(gw, backend, wait_for)
    rule = DeletedOnlyWhenStored(c)
    try:
        wait_for(lambda: rule.deleted >= 200, 20, what="readings confirmed and deleted")
        influx.stop()
        try:
            settle = gw.counter("readings_published")  # receipts already on their way may still arrive
            wait_for(lambda: gw.counter("readings_published") >= settle + 100, 20, what="1 s of readings PUBACKed")
            confirmed = gw.counter("readings_confirmed")
            base = gw.counter("readings_published")
            wait_for(lambda: gw.counter("readings_published") >= base + 500, 20, what="5 s of readings PUBACKed")
            assert gw.counter("readings_confirmed") == confirmed, "confirmed while InfluxDB was down"
            queue = gw.status()["queue"]
            assert queue["unconfirmed_rows"] + queue["rows"] >= 500, queue  # settling batches are among the rows
        finally:
            influx.start(timeout=60)
        check_stored(c, wait_for)
    finally:
        rule.stop()
    assert rule.samples >= 10 and not rule.violations, f"deleted before stored: {rule.violations[:10]}"
    q = gw.status()["queue"]
    assert q["unconfirmed_trimmed"] == 0 and q["replay_rows"] == 0 and gw.counter("replays") == 0


def test_backend_down_longer_than_every_window_deletes_nothing_then_everything_is_stored(
    sim: MeterRunner, broker: MosquittoService, influx: InfluxService, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], backend_factory: Callable[..., Backend],
    collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    """The backend is killed -9 for 6 s (receipt timeout 1 s, replay window 2 s): the gateway deletes nothing,
    probes with a few batches instead of re-sending everything, and once the backend is back everything is stored."""
    meters = add_meters(sim, 2)
    backend = backend_factory(broker)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")], queue=FAST_RECEIPTS)
    c = chain(meters, gw, influx, collector_factory(unique_id))
    start_with_receipts(gw, backend, wait_for)
    rule = DeletedOnlyWhenStored(c)
    try:
        wait_for(lambda: rule.deleted >= 100, 20, what="readings confirmed and deleted")
        backend.proc.kill()
        settle = gw.counter("readings_published")  # receipts already on their way may still arrive
        wait_for(lambda: gw.counter("readings_published") >= settle + 50, 20, what="0.5 s of readings PUBACKed")
        confirmed, resends = gw.counter("readings_confirmed"), gw.counter("resends")
        base = gw.counter("readings_published")
        wait_for(lambda: gw.counter("readings_published") >= base + 600, 20, what="6 s of readings PUBACKed")
        outage = gw.counter("readings_published") - base
        queue = gw.status()["queue"]
        # a PUBACKed batch waits SETTLE_S (0.5 s) among the queued rows for an early receipt before it joins the
        # unconfirmed ones, longer when the gateway is starved of CPU: held, it is in one or the other
        held = queue["unconfirmed_rows"] + queue["rows"]
        assert gw.counter("readings_confirmed") == confirmed and held >= outage, (queue, outage)
        # probes after 1, 2 and 4 s (plus what was in flight at the kill), not a re-send of everything every second
        probes = gw.counter("resends") - resends
        assert 1 <= probes <= 5, f"{probes} batches re-sent in a 6 s outage"
        backend.proc.start()
        check_stored(c, wait_for)
    finally:
        rule.stop()
    assert rule.samples >= 10 and not rule.violations, f"deleted before stored: {rule.violations[:10]}"
    assert gw.status()["queue"]["unconfirmed_trimmed"] == 0


def test_broker_kill9_after_puback_with_receipts_loses_nothing(
    sim: MeterRunner, mosquitto_factory: Callable[..., MosquittoService], influx: InfluxService, unique_id: str,
    tmp_path: Path, wait_for: Callable[..., Any], backend_factory: Callable[..., Backend],
) -> None:  # fmt: skip
    """The backend is away, the broker saves, 100 more readings are PUBACKed (queued for the backend, not saved),
    the broker is killed -9 and restarted: those readings never get a receipt, so the gateway sends them again
    (no replay pass involved) and InfluxDB ends up with every reading."""
    crashing = mosquitto_factory()
    meters = add_meters(sim, 2)
    backend = backend_factory(crashing)
    gw = GatewayProcess(tmp_path, crashing, unique_id, [str(sim.link_dir / "*")], queue=FAST_RECEIPTS)
    c = chain(meters, gw, influx, Collector(crashing, unique_id))
    try:
        start_with_receipts(gw, backend, wait_for)
        backend.proc.stop()  # graceful: its session (and share-group membership) stays on the broker
        base = gw.counter("readings_published")
        wait_for(lambda: gw.counter("readings_published") >= base + 50, 10, what="readings queued for the backend")
        crashing.save()
        saved = gw.counter("readings_published")
        wait_for(lambda: gw.counter("readings_published") >= saved + 100, 10, what="100 PUBACKed after the save")
        crashing.kill()
        after_save = gw.counter("readings_published") - saved
        wait_for(lambda: gw.status()["broker"]["state"] != "connected", 10, what="gateway notices the crash")
        crashing.start()
        wait_for(lambda: gw.status()["broker"]["state"] == "connected", 15, what="gateway reconnects")
        resent = gw.counter("readings_resent")
        backend.proc.start()
        check_stored(c, wait_for)
        assert gw.counter("readings_resent") - resent >= after_save >= 100
        assert gw.counter("replays") == 0 and gw.status()["queue"]["unconfirmed_trimmed"] == 0
    finally:
        c.seen.close()
        gw.stop()


def test_share_group_thief_gets_no_receipts_so_the_gateway_resends_and_everything_is_stored(
    sim: MeterRunner, broker: MosquittoService, influx: InfluxService, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], backend_factory: Callable[..., Backend],
    collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    """A second consumer in the backend's share group (what a hijacker, or ``ops`` subscribing by mistake, does on a
    broker that admits it) takes its round-robin share and writes nothing: the broker PUBACKed those messages, no
    receipt comes, and the gateway sends them again until the backend has them."""
    meters = add_meters(sim, 2)
    backend = backend_factory(broker)
    stolen = [0]
    thief = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"thief-{secrets.token_hex(3)}", protocol=paho.MQTTv5)
    thief.on_connect = lambda c, *a: c.subscribe(f"$share/{backend.settings.mqtt_share_group}/{mqtt.READINGS_FILTER}",
                                                 qos=1)  # fmt: skip
    thief.on_message = lambda *a: stolen.__setitem__(0, stolen[0] + 1)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")], queue=FAST_RECEIPTS)
    c = chain(meters, gw, influx, collector_factory(unique_id))
    start_with_receipts(gw, backend, wait_for)
    thief.connect(broker.host, broker.port)
    thief.loop_start()
    try:
        wait_for(lambda: stolen[0] >= 50 and gw.counter("readings_resent") >= 100, 30,
                 what=lambda: f"stolen {stolen[0]}, re-sent {gw.counter('readings_resent')}")  # fmt: skip
        check_stored(c, wait_for, timeout=90)
    finally:
        thief.disconnect()
        thief.loop_stop()
    assert gw.status()["queue"]["unconfirmed_trimmed"] == 0


def test_dead_lettered_batch_is_receipted_and_not_sent_again(
    broker: MosquittoService, influx: InfluxService, unique_id: str, tmp_path: Path, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], backend_factory: Callable[..., Backend],
    mqtt_recorder: Callable[..., Any],
) -> None:  # fmt: skip
    """A queued reading the backend refuses (here a corrupted row: a string where a number belongs) is dead-lettered
    once, receipted as such, deleted and counted by the gateway, and never sent again."""
    dead = mqtt_recorder(f"{mqtt.DEAD_LETTER_ROOT}/{mqtt.readings_topic(unique_id, '+')}")
    backend = backend_factory(broker)
    backend.proc.start()
    gw = gateway_factory(unique_id, [str(tmp_path / "no-meters" / "*")], queue=FAST_RECEIPTS)
    gw.start()
    gw.stop()
    bad = {"device": "a1c5500000000001", "boot": 1, "seq": 1, "ts": int(time.time() * 1000), "vrms": "127",
           "irms": 1.0, "p": 1.0, "s": 1.0, "pf": 1.0, "freq": 60.0, "energy_mwh": 1}  # fmt: skip
    with sqlite3.connect(gw.queue_path) as db:
        db.execute("INSERT INTO readings (device, boot, seq, ts, payload) VALUES (?, 1, 1, ?, ?)",
                   (bad["device"], bad["ts"], json.dumps(bad).encode()))  # fmt: skip
    gw.start()
    wait_for(lambda: gw.status()["queue"]["dead_lettered"] == 1, 15, what=lambda: f"dead-lettered\n{gw.log_tail()}")
    q = gw.status()["queue"]
    assert q["delivery"] == "receipts" and q["rows"] == 0 and q["unconfirmed_rows"] == 0
    assert not held(gw)
    sent = gw.counter("messages_sent")
    wait_for(lambda: gw.status()["uptime_s"] > 5 * FAST_RECEIPTS["receipt_timeout_s"], 15, what="5 receipt timeouts")
    assert dead.count() == 1 and json.loads(dead.payloads[0])["reason"] == "schema"
    assert gw.counter("messages_sent") == sent and gw.counter("readings_resent") == 0
    assert backend.metric("cds_ingest_receipted_batches_total", "dead_lettered") == 1


def test_backend_whose_receipts_never_arrive_falls_back_to_replay_window_and_delivers(
    sim: MeterRunner, mosquitto_factory: Callable[..., MosquittoService], influx: InfluxService, unique_id: str,
    tmp_path: Path, wait_for: Callable[..., Any], backend_factory: Callable[..., Backend],
) -> None:  # fmt: skip
    """What an older backend looks like to a new gateway: no receipt ever (here the broker's ACL refuses the
    backend's receipts). The gateway keeps its replay window, says so in its status and its retained
    GatewayStatus, and every reading is stored all the same."""
    acl = tmp_path / "acl"
    acl.write_text("topic deny cds/v1/+/+/down/receipts\ntopic readwrite #\n", encoding="utf-8")
    broker = mosquitto_factory(acl_file=acl)
    meters = add_meters(sim, 2)
    backend = backend_factory(broker)
    backend.proc.start()
    gw = GatewayProcess(tmp_path, broker, unique_id, [str(sim.link_dir / "*")], queue=FAST_RECEIPTS,
                        mqtt={"status_interval_s": 0.5})  # fmt: skip
    c = chain(meters, gw, influx, Collector(broker, unique_id))
    try:
        gw.start()
        wait_for(lambda: backend.metric("cds_ingest_receipts_total", "failed") >= 3, 20, what="receipts refused")
        check_stored(c, wait_for)
        q = gw.status()["queue"]
        assert q["delivery"] == "replay-window" and q["unconfirmed_rows"] == 0 and q["replay_rows"] > 0
        assert gw.counter("receipts") == 0 and gw.counter("readings_resent") == 0
        status = mqtt_status(broker, unique_id, gw.gateway)
        assert status.online and not status.receipts and status.unconfirmed > 0
    finally:
        c.seen.close()
        gw.stop()


def mqtt_status(broker: MosquittoService, site: str, gateway: str) -> mqtt.GatewayStatus:
    """The gateway's retained status as the backend's registry reads it."""
    got: list[bytes] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"status-{secrets.token_hex(3)}")
    client.on_connect = lambda c, *a: c.subscribe(mqtt.status_topic(site, gateway), qos=1)
    client.on_message = lambda c, u, msg: got.append(bytes(msg.payload))
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    assert got, "no retained status"
    return mqtt.status_decoder.decode(got[0])
