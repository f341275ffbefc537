"""End-to-end receipts from the backend (backend/ingest/receipts.py) against the real broker and InfluxDB: a batch
with an id is receipted to the gateway of its topic once InfluxDB has it, or once it was dead-lettered; several
batches share a receipt; a batch without an id (an older gateway) is stored and acknowledged without one; a receipt
the broker refuses is counted and blocks nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from protocol import mqtt
from protocol.mqtt import Reading, ReadingBatch
from tests.backend.conftest import count_points, device_id, distinct_keys, make_settings, reading


def batch(site: str, gateway: str, readings: list[Reading], batch_id: str = "") -> bytes:
    return mqtt.json_encoder.encode(ReadingBatch(site=site, gateway=gateway, readings=readings, batch_id=batch_id))


def receipts_by_topic(recorder: Any) -> dict[str, list[mqtt.Receipt]]:
    out: dict[str, list[mqtt.Receipt]] = {}
    for topic, payload, _ in list(recorder.messages):
        out.setdefault(topic, []).append(mqtt.receipt_decoder.decode(payload))
    return out


def named(receipts: list[mqtt.Receipt], field: str) -> list[str]:
    return [batch_id for r in receipts for batch_id in getattr(r, field)]


def _metric(app: Any, name: str, label: str) -> float:
    for family in app.state.services.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name and label in sample.labels.values():
                return float(sample.value)
    return 0.0


@pytest.mark.asyncio
async def test_batches_receipted_per_gateway_coalesced_and_only_once_influxdb_has_them(
    broker: Any, influx: Any, unique_id: str, publisher_factory: Any, mqtt_recorder: Any, wait_for_async: Any,
) -> None:
    """With InfluxDB down nothing is receipted (the backend cannot have the readings); when it is back every batch
    is receipted to the gateway whose topic carried it, several batches per receipt, after the points are there."""
    site = unique_id
    seen = mqtt_recorder(f"cds/v1/{site}/+/down/receipts")
    app = create_app(make_settings(broker, influx, unique_id, ingest_retry_max_s=0.5, ingest_flush_ms=50))
    async with AsyncTestClient(app):
        assert await app.state.services.ingest.bridge.wait_connected(10)
        pub = publisher_factory(broker)
        now = int(time.time() * 1000)
        sent: dict[str, list[str]] = {"gw-a": [], "gw-b": []}
        influx.stop()
        try:
            for k in range(40):
                gw = "gw-a" if k % 2 else "gw-b"
                batch_id = f"run{k % 2}-{k}"
                readings = [reading(device_id(k % 2), k * 10 + i, now - 60_000 + k * 10 + i) for i in range(10)]
                pub.publish(mqtt.readings_topic(site, gw), batch(site, gw, readings, batch_id))
                sent[gw].append(batch_id)
            pub.wait_all_acked()
            await wait_for_async(lambda: app.state.services.ingest.unacked >= 40, timeout=10, what="all received")
            assert seen.count() == 0, "a receipt before InfluxDB had the readings"
        finally:
            influx.start(timeout=60)
        await wait_for_async(lambda: sum(len(named(r, "stored")) for r in receipts_by_topic(seen).values()) >= 40,
                             timeout=30, what="every batch receipted")
        assert count_points(influx, unique_id) == 400
    by_topic = receipts_by_topic(seen)
    assert set(by_topic) == {mqtt.receipts_topic(site, "gw-a"), mqtt.receipts_topic(site, "gw-b")}
    for gw, ids in sent.items():
        receipts = by_topic[mqtt.receipts_topic(site, gw)]
        assert sorted(named(receipts, "stored")) == sorted(ids) and not named(receipts, "dead_lettered")
        assert len(receipts) < len(ids), f"{len(receipts)} receipts for {len(ids)} batches: not coalesced"
    assert _metric(app, "cds_ingest_receipts_total", "published") == seen.count()


@pytest.mark.asyncio
async def test_refused_batches_are_receipted_as_dead_lettered_and_old_style_batches_get_no_receipt(
    app_client: Any, broker: Any, influx: Any, unique_id: str, publisher_factory: Any, mqtt_recorder: Any,
    wait_for_async: Any,
) -> None:
    site, gw = unique_id, "gw1"
    seen = mqtt_recorder(f"cds/v1/{site}/+/down/receipts")
    dead = mqtt_recorder(f"{mqtt.DEAD_LETTER_ROOT}/#")
    pub = publisher_factory(broker)
    topic = mqtt.readings_topic(site, gw)
    now = int(time.time() * 1000)
    good = json.loads(batch(site, gw, [reading(device_id(1), 1, now - 1000)], "b-schema"))
    good["readings"][0]["vrms"] = "127"
    future = now + 3 * 86_400_000
    payloads = [
        json.dumps(good).encode(),  # schema: refused whole, dead-lettered
        batch("outro", gw, [reading(device_id(1), 2, now - 900)], "b-mismatch"),  # topic_mismatch: to the topic's gw
        batch(site, gw, [reading(device_id(1), 3, now - 800), reading(device_id(1), 4, future)], "b-partial"),
        batch(site, gw, [reading(device_id(1), 5, future)], "b-all-future"),  # every reading refused on its own
        b'{"batch_id": "b-not-json", ',  # no readable id: cannot be receipted
        batch(site, gw, [reading(device_id(1), 6, now - 700)]),  # an older gateway: no id, no receipt
        batch(site, gw, [reading(device_id(1), 7, now - 600)], "b-good"),
    ]
    for payload in payloads:
        pub.publish(topic, payload)
    pub.wait_all_acked()
    ingest = app_client.app.state.services.ingest
    await wait_for_async(lambda: ingest.unacked == 0 and dead.count() >= 5, timeout=15, what="all handled")
    await wait_for_async(lambda: sum(len(r.stored) + len(r.dead_lettered) for rs in receipts_by_topic(seen).values()
                                     for r in rs) >= 5, timeout=10, what="five batches receipted")
    receipts = receipts_by_topic(seen)
    assert set(receipts) == {mqtt.receipts_topic(site, gw)}  # the payload's "outro" never gets one
    mine = receipts[mqtt.receipts_topic(site, gw)]
    assert sorted(named(mine, "stored")) == ["b-good", "b-partial"]
    assert sorted(named(mine, "dead_lettered")) == ["b-all-future", "b-mismatch", "b-schema"]
    assert distinct_keys(influx, unique_id) == {(device_id(1), 1, s) for s in (3, 6, 7)}  # the id-less one too


@pytest.mark.asyncio
async def test_receipt_refused_by_the_broker_is_counted_and_blocks_nothing(
    influx: Any, unique_id: str, tmp_path: Path, mosquitto_factory: Any, publisher_factory: Any,
    wait_for_async: Any,
) -> None:
    """The broker's ACL refuses the backend's receipts (PUBACK 0x87): readings are stored and acknowledged as
    always, the failure is counted, and the gateway would simply send the batch again."""
    acl = tmp_path / "acl"
    acl.write_text("topic deny cds/v1/+/+/down/receipts\ntopic readwrite #\n", encoding="utf-8")
    broker = mosquitto_factory(acl_file=acl)
    app = create_app(make_settings(broker, influx, unique_id))
    async with AsyncTestClient(app):
        ingest = app.state.services.ingest
        assert await ingest.bridge.wait_connected(10)
        pub = publisher_factory(broker)
        now = int(time.time() * 1000)
        for k in range(5):
            pub.publish(mqtt.readings_topic(unique_id, "gw1"),
                        batch(unique_id, "gw1", [reading(device_id(1), k, now - 1000 + k)], f"x-{k}"))
        pub.wait_all_acked()
        await wait_for_async(lambda: count_points(influx, unique_id) == 5 and ingest.unacked == 0, timeout=15,
                             what="stored and acknowledged")
        await wait_for_async(lambda: _metric(app, "cds_ingest_receipts_total", "failed") >= 1, timeout=15,
                             what="the refused receipt counted")
        assert _metric(app, "cds_ingest_receipts_total", "published") == 0
        assert _metric(app, "cds_ingest_receipted_batches_total", "stored") == 5


def test_receipt_ids_evolve_like_every_payload() -> None:
    """An older backend ignores ``batch_id``; an older gateway's batch decodes with an empty one; a Receipt from a
    newer backend with fields this one does not know still decodes."""

    class OldBatch(msgspec.Struct):
        site: str
        gateway: str
        readings: list[Reading]
        sent_at: int = 0
        v: int = 1

    now = int(time.time() * 1000)
    new = batch("s", "g", [reading(device_id(1), 1, now)], "abc-1")
    assert msgspec.json.decode(new, type=OldBatch).readings[0].seq == 1
    old = msgspec.json.encode(OldBatch("s", "g", [reading(device_id(1), 1, now)]))
    assert mqtt.batch_decoder.decode(old).batch_id == ""
    receipt = mqtt.receipt_decoder.decode(b'{"stored":["a-1"],"dead_lettered":[],"later":{"x":1},"v":1}')
    assert receipt.stored == ["a-1"]
    with pytest.raises(msgspec.ValidationError):
        mqtt.receipt_decoder.decode(b'{"stored":["a\\n"]}')
