"""MQTT ingest against the real broker and InfluxDB: good data stored once, bad data dead-lettered and counted,
rollups correct for late and replayed data."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from backend.store.readings import dirty_mark_lines
from backend.store.rollups import merge_windows
from protocol import mqtt
from tests.backend.conftest import batch_bytes, count_points, device_id, distinct_keys, reading


def _metric(client: Any, name: str, label: str = "") -> float:
    reg = client.app.state.services.metrics.registry
    for family in reg.collect():
        for sample in family.samples:
            if sample.name == name and (not label or label in sample.labels.values()):
                return float(sample.value)
    return 0.0


@pytest.mark.asyncio
async def test_batches_stored_once_even_when_replayed(app_client: Any, broker: Any, influx: Any, unique_id: str,
                                                      publisher_factory: Any, wait_for_async: Any) -> None:
    pub = publisher_factory(broker)
    now = int(time.time() * 1000)
    site, gw = unique_id, "gw1"
    batches = [[reading(device_id(d), seq, now - 60_000 + seq * 100) for seq in range(100)] for d in range(3)]
    for _ in range(2):  # the gateway replays everything (e.g. lost PUBACKs): InfluxDB must overwrite
        for b in batches:
            pub.publish(mqtt.readings_topic(site, gw), batch_bytes(site, gw, b))
    pub.wait_all_acked()
    ingest = app_client.app.state.services.ingest
    await wait_for_async(lambda: ingest.written_readings >= 600 and ingest.unacked == 0, timeout=15,
                         what="600 readings written and acked")
    assert count_points(influx, unique_id) == 300
    assert distinct_keys(influx, unique_id) == {(device_id(d), 1, s) for d in range(3) for s in range(100)}


@pytest.mark.asyncio
async def test_malformed_and_hostile_payloads_dead_lettered_counted_good_data_kept(
    app_client: Any, broker: Any, influx: Any, unique_id: str, publisher_factory: Any, mqtt_recorder: Any,
    wait_for_async: Any,
) -> None:
    dead = mqtt_recorder(f"{mqtt.DEAD_LETTER_ROOT}/#")
    pub = publisher_factory(broker)
    site, gw = unique_id, "gw1"
    topic = mqtt.readings_topic(site, gw)
    now = int(time.time() * 1000)
    good = reading(device_id(1), 1, now - 1000)
    good_json = json.loads(batch_bytes(site, gw, [good]))

    def variant(**changes: Any) -> bytes:
        body = json.loads(json.dumps(good_json))
        body["readings"][0].update(changes)
        return json.dumps(body).encode()

    hostile: list[tuple[str, bytes, str]] = [
        (topic, b"{not json", "invalid_json"),
        (topic, b"", "invalid_json"),
        (topic, variant(vrms="127"), "schema"),                       # wrong type
        (topic, variant(p=float("nan")).replace(b"NaN", b"NaN"), "invalid_json"),  # NaN literal is not JSON
        (topic, variant(p=1e999).replace(b"Infinity", b"1e999"), "schema"),        # overflows to inf
        (topic, variant(device='00000000000000aa",x=1'), "schema"),    # line-protocol injection in an id
        (topic, variant(device="ção000000000000a"), "schema"),        # unicode id
        (topic, json.dumps({**good_json, "site": "outro"}).encode(), "topic_mismatch"),
        (topic, json.dumps({**good_json, "site": "a b,c=d"}).encode(), "schema"),
        (mqtt.readings_topic("ção", gw), batch_bytes(site, gw, [good]), "bad_topic"),
        (mqtt.readings_topic("a,b=c", gw), batch_bytes(site, gw, [good]), "bad_topic"),
        (topic, b"[" + b" " * 300_000 + b"]", "oversize"),
    ]
    future = reading(device_id(1), 2, now + 3 * 86_400_000)
    mixed = batch_bytes(site, gw, [reading(device_id(1), 3, now - 500), future, reading(device_id(1), 4, now - 400)])
    for t, payload, _ in hostile:
        pub.publish(t, payload)
    pub.publish(topic, mixed)
    pub.publish(topic, batch_bytes(site, gw, [good]))
    pub.wait_all_acked()

    ingest = app_client.app.state.services.ingest
    await wait_for_async(lambda: dead.count() >= len(hostile) + 1 and ingest.unacked == 0, timeout=15,
                         what="every bad payload dead-lettered and all acked")
    assert count_points(influx, unique_id) == 3  # seq 1, 3, 4 kept; the future reading refused
    letters = [json.loads(p) for p in dead.payloads]
    reasons = sorted(letter["reason"] for letter in letters)
    assert reasons == sorted([r for _, _, r in hostile] + ["future_timestamp"])
    for letter in letters:
        assert letter["error"] and letter["topic"].startswith("cds/v1/")
    for reason in {r for _, _, r in hostile}:
        assert _metric(app_client, "cds_ingest_rejected_total", reason) >= 1, reason
    future_letter = next(x for x in letters if x["reason"] == "future_timestamp")
    assert [r["seq"] for r in json.loads(future_letter["payload"])["readings"]] == [2]
    # the loop survived: a good batch after all that is still ingested
    pub.publish(topic, batch_bytes(site, gw, [reading(device_id(1), 5, now - 300)]))
    await wait_for_async(lambda: count_points(influx, unique_id) == 4, timeout=10, what="late good batch")


@pytest.mark.asyncio
async def test_rollups_follow_late_and_replayed_data(app_client: Any, broker: Any, influx: Any, unique_id: str,
                                                     publisher_factory: Any, wait_for_async: Any) -> None:
    pub = publisher_factory(broker)
    site, gw, dev = unique_id, "gw1", device_id(7)
    topic = mqtt.readings_topic(site, gw)
    hour = (int(time.time() * 1000) // 3_600_000 - 30) * 3_600_000  # 30 h ago: "late" data
    minute_a = [reading(dev, s, hour + s * 1000, p=100.0, energy=10_000 + s) for s in range(60)]
    pub.publish(topic, batch_bytes(site, gw, minute_a))
    db = unique_id

    def r1m() -> list[dict[str, Any]]:
        return influx.rows(f'SELECT * FROM "{db}"."r1m"."readings" WHERE device = \'{dev}\'', db=db)

    def r1h() -> list[dict[str, Any]]:
        return influx.rows(f'SELECT * FROM "{db}"."r1h"."readings" WHERE device = \'{dev}\'', db=db)

    await wait_for_async(lambda: len(r1h()) == 1 and r1h()[0]["n"] == 60, timeout=15, what="first rollup")
    assert r1m()[0]["energy_first"] == 10_000 and r1m()[0]["energy_last"] == 10_059
    # later readings of the same hour arrive (late), in the next minute, with different power
    minute_b = [reading(dev, 60 + s, hour + 60_000 + s * 1000, p=300.0, energy=20_000 + s) for s in range(30)]
    pub.publish(topic, batch_bytes(site, gw, minute_b))
    await wait_for_async(lambda: r1h() and r1h()[0]["n"] == 90, timeout=15, what="hour updated with late data")
    hourly = r1h()[0]
    assert hourly["energy_first"] == 10_000 and hourly["energy_last"] == 20_029
    assert hourly["p_mean"] == pytest.approx((60 * 100 + 30 * 300) / 90)
    assert hourly["p_max"] == 300 and hourly["p_min"] == 100
    assert [m["n"] for m in r1m()] == [60, 30]
    # a replay of minute A with corrected values overwrites raw points, and the rollups follow
    pub.publish(topic, batch_bytes(site, gw, [reading(dev, s, hour + s * 1000, p=200.0, energy=10_000 + s)
                                              for s in range(60)]))
    await wait_for_async(lambda: r1h()[0]["p_mean"] == pytest.approx((60 * 200 + 30 * 300) / 90), timeout=15,
                         what="hour recomputed after replay")
    assert r1h()[0]["n"] == 90 and count_points(influx, db) == 90


def test_dirty_marks_group_devices_by_minute_range() -> None:
    lines = dirty_mark_lines({"aa": (60_500, 61_000), "bb": (60_000, 119_999), "cc": (1_000, 200_000)}, "w 1", 5)
    assert lines == [
        'rollup_dirty,w=w\\ 1 start_ms=0i,end_ms=240000i,devices="cc" 5',
        'rollup_dirty,w=w\\ 1 start_ms=60000i,end_ms=120000i,devices="aa,bb" 6',
    ]


def test_merge_windows_unites_overlaps_and_splits_long_ranges() -> None:
    ws = merge_windows([(0, 60_000, {"a"}), (60_000, 120_000, {"b"}), (600_000, 660_000, {"c"})], 60_000)
    assert [(w.start, w.end, w.devices) for w in ws] == [(0, 120_000, {"a", "b"}), (600_000, 660_000, {"c"})]
    long = merge_windows([(0, 3 * 86_400_000, {"a"})], 3_600_000)
    assert [(w.start, w.end) for w in long] == [(0, 86_400_000), (86_400_000, 172_800_000),
                                                (172_800_000, 259_200_000)]
    many = merge_windows([(0, 60_000, {f"{i:016x}" for i in range(300)})], 60_000)
    assert many[0].devices is None


def test_fast_formatter_matches_reading_line_and_refuses_non_finite() -> None:
    from backend.store.lineprotocol import LineProtocolError, reading_formatter, reading_line

    fmt = reading_formatter("site-1", "gw_2")
    for r in [reading(device_id(3), 5, 1_700_000_000_000), reading(device_id(4), 0, 0, p=-12.5, energy=0)]:
        assert fmt(r) == reading_line("site-1", "gw_2", r)
    with pytest.raises(LineProtocolError):
        fmt(reading(device_id(3), 6, 1, p=float("nan")))
    assert reading_formatter("a b", "c,d=e")(reading(device_id(1), 1, 1)).startswith(
        "readings,device=0000000000000001,gateway=c\\,d\\=e,site=a\\ b vrms=")


@pytest.mark.asyncio
async def test_rollups_by_another_replica_see_writes_of_a_replica_without_worker(
    broker: Any, influx: Any, unique_id: str, publisher_factory: Any, wait_for_async: Any,
) -> None:
    """A replica with BACKEND_ROLLUP_ENABLED=false still writes dirty marks; another replica's worker uses them."""
    from litestar.testing import AsyncTestClient

    from backend.api.app import create_app
    from backend.store.influx import InfluxClient
    from backend.store.rollups import RollupWorker
    from tests.backend.conftest import make_settings

    settings = make_settings(broker, influx, unique_id, rollup_enabled=False)
    app = create_app(settings)
    async with AsyncTestClient(app):
        ingest = app.state.services.ingest
        assert await ingest.bridge.wait_connected(10)
        pub = publisher_factory(broker)
        now = int(time.time() * 1000)
        readings = [reading(device_id(2), s, now - 90_000 + s * 1000) for s in range(30)]
        pub.publish(mqtt.readings_topic(unique_id, "gw1"), batch_bytes(unique_id, "gw1", readings))
        await wait_for_async(lambda: ingest.written_readings == 30 and ingest.unacked == 0, timeout=10,
                             what="written and acked")
    assert influx.rows(f'SELECT * FROM "{unique_id}"."r1m"."readings"', db=unique_id) == []
    async with InfluxClient(influx.url) as client:
        worker = RollupWorker(client, settings)
        assert await worker.run_once(now_ns=time.time_ns() + 10**9) >= 2
    rows = influx.rows(f'SELECT sum(n) FROM "{unique_id}"."r1m"."readings"', db=unique_id)
    assert rows[0]["sum"] == 30
