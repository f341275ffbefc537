"""Fault tests: the gateway as a real subprocess, meters simulated on ptys, the real Mosquitto, a persistent
subscriber checking every reading against the simulator's ground truth (see conftest.check_delivery)."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from typing import Any

from gwharness import Collector, GatewayProcess, check_delivery
from paho.mqtt import publish

from devstack.mosquitto import MosquittoService
from protocol import mqtt
from sim.runner import MeterRunner

PERIOD_MS = 20


def add_meters(sim: MeterRunner, n: int, **kwargs: Any) -> list[Any]:
    """Meters reporting every 20 ms with a STATUS every 500 ms. ``queue_capacity`` defaults to 256 (5 s) so
    that only the tests about meter-side loss see the firmware's 16-reading ring overflow."""
    kwargs.setdefault("queue_capacity", 256)
    return [sim.add_meter(report_period_ms=PERIOD_MS, status_interval_ms=500, **kwargs) for _ in range(n)]


def test_broker_stopped_and_restarted_loses_nothing(
    sim: MeterRunner, broker: MosquittoService, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    meters = add_meters(sim, 2)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    gw.start()
    wait_for(lambda: collector.count() >= 40, 10, what="first readings")
    broker.stop()
    wait_for(lambda: gw.status()["broker"]["state"] != "connected", 10, what="gateway notices the broker is gone")
    base = gw.counter("readings_committed")
    wait_for(lambda: gw.counter("readings_committed") >= base + 150, 20, what="150 readings queued while down")
    assert gw.status()["queue"]["rows"] >= 150
    broker.start()
    figures = check_delivery(meters, collector, gw, wait_for)
    assert figures["dropped_at_meter_truth"] == 0 and figures["dropped_full"] == 0
    assert gw.counter("mqtt_connects") >= 2


def test_broker_restarted_without_a_retained_device_info_gets_it_again(
    sim: MeterRunner, broker: MosquittoService, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], mqtt_recorder: Callable[..., Any],
) -> None:  # fmt: skip
    """A broker that comes back without a meter's retained DeviceInfo (restored from a save older than it, or the
    message cleared) must get it again from the gateway on reconnect: the meter does not say HELLO again, and
    without DeviceInfo the backend does not know where to send the meter's configuration."""
    meter = add_meters(sim, 1)[0]
    seen = mqtt_recorder(f"cds/v1/{unique_id}/+/devices/{meter.device}")
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    gw.start()
    topic = seen.wait_count(1)[0][0]
    publish.single(topic, b"", qos=1, retain=True, hostname=broker.host, port=broker.port)
    wait_for(lambda: seen.payloads[-1] == b"", 10, what="the retained DeviceInfo cleared")
    broker.stop()
    broker.start()
    wait_for(lambda: gw.counter("mqtt_connects") >= 2, 20, what="the gateway reconnected")
    fresh = mqtt_recorder(topic)
    info = mqtt.device_decoder.decode(fresh.wait_count(1)[0][1])
    assert info.device == meter.device and info.link == "up"


def test_gateway_kill9_at_random_moments_20_times_loses_nothing(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    """SIGKILL the gateway 20 times, each after a random number of further commits or PUBACKs (seeded), with
    the firmware's real 16-reading ring: what the meters discard while the gateway is down is counted."""
    rng = random.Random(0xCD5)
    meters = add_meters(sim, 2, queue_capacity=16)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    for _ in range(20):
        gw.start()
        counter = rng.choice(["readings_committed", "messages_acked", "acks_sent"])
        target = rng.randint(1, 40)
        wait_for(lambda c=counter, n=target: gw.counter(c) >= n, 15, what=f"{target} {counter}")  # type: ignore[misc]
        gw.kill9()
    gw.start()
    figures = check_delivery(meters, collector, gw, wait_for)
    assert figures["dropped_full"] == 0
    assert figures["max_ts_error_ms"] < 1000, figures


def test_meter_unplugged_and_replugged_loses_nothing(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    meters = add_meters(sim, 2)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    gw.start()
    wait_for(lambda: collector.count() >= 40, 10, what="first readings")
    unplugged = meters[0]

    def link() -> str | None:
        """The unplugged meter's link as the gateway knows it: "up" once its HELLO came on the open port."""
        return next((m["link"] for m in gw.status()["meters"] if m["device"] == unplugged.device), None)

    # Each step waits for the gateway to know the meter on its port, not just for the port to be open: under load the
    # other meter's backlog alone makes the first 40 readings, and a port opened an instant before the unplug never
    # heard the HELLO, so the gateway could not say which meter went away (a run under a CPU hog did exactly that).
    for _ in range(3):
        wait_for(lambda: link() == "up", 10, what="the gateway knows the meter on its port")
        unplugged.unplug()
        wait_for(lambda: link() == "down", 10, what="the gateway marks the meter down")
        produced = len(unplugged.truth().produced)
        wait_for(lambda p=produced: len(unplugged.truth().produced) >= p + 25, 10, what="readings while unplugged")
        unplugged.replug()
    wait_for(lambda: link() == "up", 10, what="the meter up again")
    figures = check_delivery(meters, collector, gw, wait_for)
    assert figures["dropped_at_meter_truth"] == 0 and figures["dropped_full"] == 0
    device_msgs = collector.topic_payloads(f"/devices/{unplugged.device}")
    assert any(b'"link":"down"' in p for p in device_msgs) and device_msgs and b'"link":"up"' in device_msgs[-1]
    assert gw.status()["errors"].get("serial_io", 0) >= 3


def test_meter_unplugged_longer_than_its_queue_counts_dropped_at_meter(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    (meter,) = add_meters(sim, 1, queue_capacity=16)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    gw.start()
    wait_for(lambda: collector.count() >= 20, 10, what="first readings")
    meter.unplug()
    wait_for(lambda: len(meter.truth().dropped) >= 30, 10, what="the meter's ring overflows")
    meter.replug()
    figures = check_delivery([meter], collector, gw, wait_for)
    assert figures["dropped_at_meter_truth"] >= 30  # and check_delivery proved the gateway counted exactly these


def test_meter_reboot_loses_nothing_but_the_readings_lost_in_its_ram(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    meters = add_meters(sim, 2)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    gw.start()
    wait_for(lambda: collector.count() >= 40, 10, what="first readings")
    for off_ms in (0, 200, 0):
        n = collector.count()
        meters[0].reboot(off_ms=off_ms)
        wait_for(lambda n=n: collector.count() >= n + 30, 10, what="readings after the reboot")  # type: ignore[misc]
    figures = check_delivery(meters, collector, gw, wait_for)
    assert {b for _, b, _ in collector.keys(meters[0].device)} == {1, 2, 3, 4}
    assert figures["dropped_full"] == 0


def test_corrupt_and_dropped_frames_both_directions_lose_nothing(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    meters = add_meters(sim, 2)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    gw.start()
    wait_for(lambda: collector.count() >= 20, 10, what="first readings")
    for m in meters:
        for direction in ("tx", "rx"):
            m.set_corrupt_rate(0.1, direction)
            m.set_drop_rate(0.1, direction)
    n = collector.count()
    wait_for(lambda: collector.count() >= n + 300, 30, what="300 readings through the noisy links")
    for m in meters:
        for direction in ("tx", "rx"):
            m.set_corrupt_rate(0, direction)
            m.set_drop_rate(0, direction)
    figures = check_delivery(meters, collector, gw, wait_for)
    errors = gw.status()["errors"]
    assert sum(v for k, v in errors.items() if k.startswith("frame_")) > 0, errors
    assert figures["dropped_full"] == 0 and figures["dropped_at_meter_truth"] == 0


def test_disk_queue_full_drops_oldest_and_counts_them(
    sim: MeterRunner, broker: MosquittoService, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    meters = add_meters(sim, 2)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")], queue={"max_rows": 100, "full_policy": "drop-oldest"})
    gw.start()
    wait_for(lambda: collector.count() >= 20, 10, what="first readings")
    broker.stop()
    wait_for(lambda: gw.status()["queue"]["dropped_full"] >= 150, 20, what="queue overflow")
    assert gw.status()["queue"]["rows"] <= 100
    broker.start()
    # the queue keeps dropping until the gateway drains it: check_delivery counts on a snapshot after the last drop
    figures = check_delivery(meters, collector, gw, wait_for)
    assert figures["dropped_full"] >= 150  # check_delivery proved: missing == dropped_full, nothing else


def test_disk_queue_full_refuse_new_leaves_readings_at_the_meter(
    sim: MeterRunner, broker: MosquittoService, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    (meter,) = add_meters(sim, 1, queue_capacity=16)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")], queue={"max_rows": 60, "full_policy": "refuse-new"})
    gw.start()
    wait_for(lambda: collector.count() >= 20, 10, what="first readings")
    broker.stop()
    wait_for(lambda: gw.counter("refused_full") > 0 and len(meter.truth().dropped) >= 20, 20, what="refusals")
    assert gw.status()["queue"]["rows"] <= 60
    broker.start()
    figures = check_delivery([meter], collector, gw, wait_for)
    assert figures["dropped_full"] == 0 and figures["dropped_at_meter_truth"] >= 20


def test_readings_before_any_hello_get_a_sync_and_lose_nothing(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    """The meter's boot HELLO went unheard and the gateway's first SYNC is lost on the wire: the gateway sees
    READINGs on a link without HELLO, answers them with SYNC and then takes everything."""
    (meter,) = add_meters(sim, 1)
    meter.drop_next(1, "rx")
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    gw.start()
    wait_for(lambda: collector.count() >= 20, 15, what="readings after the second SYNC")
    assert gw.counter("readings_without_hello") > 0 and gw.counter("syncs_sent") >= 2
    figures = check_delivery([meter], collector, gw, wait_for)
    assert figures["dropped_full"] == 0


def test_meter_clock_drift_and_resends_keep_timestamps_on_the_gateway_clock(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    """A meter clock 10 % slow (far beyond a real crystal, to make the effect visible in seconds): fresh readings
    re-anchor the uptime mapping, so neither they nor the readings resent after an unplug drift away from the
    true measuring time (a mapping anchored once would be ~100 ms off per second of test)."""
    (meter,) = add_meters(sim, 1)
    meter.set_drift_ppm(-100_000)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    gw.start()
    wait_for(lambda: collector.count() >= 150, 10, what="3 s of readings")
    unplugged_ms = sim.now_ms()
    meter.unplug()
    n = len(meter.truth().produced)
    wait_for(lambda: len(meter.truth().produced) >= n + 20, 10, what="readings while unplugged")
    replugged_ms = sim.now_ms()
    meter.replug()
    figures = check_delivery([meter], collector, gw, wait_for)
    # A stamp is late by this machine's scheduling latency (a fresh reading is stamped on arrival; hundreds of ms
    # under a CPU hog, so no bound on lateness says anything about drift). Drift shows as the opposite: a slow
    # clock's uptime falls behind, so a mapping anchored once stamps readings *early*, by 10 % of the time since
    # its anchor (over 300 ms after these 3 s). Re-anchored on every fresh reading, a reading can be early only by
    # 10 % of the time since the last fresh one: the unplug, plus up to a second of stalled reads before it.
    measured = {(r.boot, r.seq): r.t_ms for r in meter.truth().produced}
    early = max(measured[(b, s)] - collector.readings[(meter.device, b, s)].ts
                for _, b, s in collector.keys(meter.device))
    allowed = 0.1 * (replugged_ms - unplugged_ms + 1000)
    assert early <= allowed, f"a reading stamped {early} ms before it was measured (allowed {allowed:.0f}): {figures}"
    assert figures["max_ts_error_ms"] < 60_000, figures  # and none is off by minutes


def test_meter_reboot_with_its_hello_lost_is_detected_and_resynced(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    """The HELLO after a reset is lost on the wire: the gateway must not file the new boot's readings under the
    old boot (or drop them as duplicates); its STATUS (next_seq below what was committed) gives it away."""
    (meter,) = add_meters(sim, 1)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    gw.start()
    wait_for(lambda: collector.count() >= 100, 10, what="readings of boot 1")
    meter.reboot(lose_hello=True)
    wait_for(lambda: any(b == 2 for _, b, _ in collector.keys(None)), 10, what="readings of boot 2")
    figures = check_delivery([meter], collector, gw, wait_for)
    assert gw.status()["errors"].get("boot_mismatch", 0) >= 1
    assert figures["dropped_full"] == 0


def test_meter_with_a_wiped_eeprom_is_resynced_at_a_bounded_rate_and_the_others_keep_flowing(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    """A replaced EEPROM brings a meter back as boot 1 with seq from 1: keys the gateway already committed. The
    meter answers every SYNC with the same HELLO and a STATUS below the committed seq, so the gateway used to SYNC
    it again at line speed (a restarted demo logged 480 000 warnings a minute) until the new seq passed the old
    one. Now it SYNCs such a meter at most twice per ``sync_interval_s`` and warns once, and the other meter's
    readings keep flowing. (The wiped meter's readings below the old seq reuse committed keys: they are taken for
    resends, as they must be without a new boot counter; those above are filed again.)"""
    wiped, other = add_meters(sim, 2)
    collector = collector_factory(unique_id)
    interval = 0.2
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")], serial={"sync_interval_s": interval})
    gw.start()
    wait_for(lambda: len(collector.keys(wiped.device)) >= 150, 20, what="readings of boot 1")
    syncs_before = gw.counter("syncs_sent")
    others_before = len(collector.keys(other.device))
    started = time.monotonic()
    wiped.wipe_eeprom_and_reboot()
    old_seq = max(seq for _, boot, seq in collector.keys(wiped.device) if boot == 1)
    last = max(r.seq for r in wiped.truth().produced if r.boot == 1)  # the boot before the wipe, as produced
    assert wiped.truth().boot_count == 1 and last >= old_seq
    wait_for(lambda: any(s > last for _, _, s in collector.keys(wiped.device)), 30,
             what="the wiped meter's readings past the old seq")  # fmt: skip
    elapsed = time.monotonic() - started
    syncs = gw.counter("syncs_sent") - syncs_before
    assert gw.status()["errors"].get("boot_mismatch", 0) >= 1
    assert syncs <= 2 * elapsed / interval + 2, (syncs, elapsed)
    wait_for(lambda: len(collector.keys(other.device)) >= others_before + 100, 20, what="the other meter's readings")


def test_uptime_wrap_after_49_days_keeps_timestamps_and_order(
    sim: MeterRunner, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    """The meter's u32 millisecond counter wraps 1.5 s after power-on, while it is unplugged (or, on a slow
    machine, before): the readings resent after the replug straddle the wrap; their timestamps stay right."""
    (meter,) = add_meters(sim, 1, uptime_start_ms=2**32 - 1500)
    collector = collector_factory(unique_id)
    gw = gateway_factory(unique_id, [str(sim.link_dir / "*")])
    gw.start()
    wait_for(lambda: collector.count() >= 10, 10, what="readings before the wrap")
    meter.unplug()
    n = len(meter.truth().produced)
    wait_for(lambda: len(meter.truth().produced) >= n + 80, 10, what="readings while unplugged")
    wait_for(lambda: meter.truth().produced[-1].frame.uptime_ms < 2**31, 10, what="the counter wrapped")
    replugged_ms = sim.now_ms()  # every resent reading reaches the gateway after this
    meter.replug()
    figures = check_delivery([meter], collector, gw, wait_for)
    produced = {r.seq: r for r in meter.truth().produced if r.boot == 1}
    uptimes = [r.frame.uptime_ms for r in produced.values()]
    assert any(b < a for a, b in itertools.pairwise(uptimes)), f"no wrap in {uptimes[:3]}..{uptimes[-3:]}"
    # A resent reading is stamped from the one before it by the uptime difference the meter measured (the meter ran
    # before the gateway opened its port, so those up to the replug are all resends), so two consecutive readings lie
    # exactly as far apart as the meter measured them: that is what a wrong wrap breaks (by 2^32 ms = 49.7 days).
    # Except where a reading is stamped at its arrival: a resend whose mapped time would lie after its arrival (the
    # one before was stamped late, by this machine's scheduling latency, seconds under a CPU hog), stamped then and
    # never in the future; and a fresh reading measured after the replug, which re-anchors the mapping at its
    # arrival (the transport's latency later than its measurement, so its gap to a resend before it can grow). Both
    # arrive after the replug. So where the one before was stamped early enough that the measured gap still ends
    # before the replug, the gap must be exact; that is decided from the stamps and the replug time, not hoped for.
    # Elsewhere a reading keeps the order, is stamped after the replug and never before it was measured (what a
    # wrong mapping does: stamp early).
    got = sorted((seq, collector.readings[(meter.device, 1, seq)]) for _, boot, seq in collector.keys(meter.device)
                 if boot == 1)
    pairs = [(a, b) for a, b in itertools.pairwise(got) if b[0] == a[0] + 1 and a[0] > n]
    exact = 0
    for (s0, r0), (s1, r1) in pairs:
        apart = (produced[s1].frame.uptime_ms - produced[s0].frame.uptime_ms) % 2**32
        what = f"seq {s0}->{s1}: {r1.ts - r0.ts} ms apart, measured {apart} ms (replugged at {replugged_ms})"
        if r0.ts + apart + 2 <= replugged_ms:  # a stamp before the replug cannot be its arrival time
            exact += 1
            assert abs((r1.ts - r0.ts) - apart) <= 2, what  # 2: a collision moves a stamp by a millisecond
        else:
            assert r1.ts - r0.ts >= -2 and r1.ts >= max(replugged_ms, produced[s1].t_ms) - 2, what
    assert exact, f"no pair stamped before the replug among {len(pairs)}: {got[-1]}"
    assert figures["max_ts_error_ms"] < 60_000, figures  # and no reading is off by days (when it wrapped early)


def _kill9_after_puback_scenario(
    sim: MeterRunner, crashing: MosquittoService, unique_id: str, wait_for: Callable[..., Any],
    gw: GatewayProcess, collector: Collector,
) -> tuple[list[Any], int]:  # fmt: skip
    """Readings flow; the subscriber (the backend) goes offline, so the broker's only copy of what follows is its
    queue for the subscriber's session; the broker saves; 100 more readings are PUBACKed (gateway-side counter),
    i.e. queued after the save; then SIGKILL and restart. Returns the meters and the readings PUBACKed after the
    save. The subscriber comes back with the session of the save (it subscribed before it), so it receives
    whatever the broker holds or receives again from then on — and nothing else could have reached it."""
    meters = add_meters(sim, 2)
    gw.start()
    wait_for(lambda: collector.count() >= 40, 10, what="first readings")
    collector.pause()
    base = gw.counter("readings_published")
    wait_for(lambda: gw.counter("readings_published") >= base + 50, 10, what="readings queued for the offline backend")
    crashing.save()
    saved = gw.counter("readings_published")
    wait_for(lambda: gw.counter("readings_published") >= saved + 100, 10, what="100 readings PUBACKed after the save")
    crashing.kill()
    after_save = gw.counter("readings_published") - saved
    wait_for(lambda: gw.status()["broker"]["state"] != "connected", 10, what="gateway notices the crash")
    n = gw.counter("readings_committed")
    wait_for(lambda: gw.counter("readings_committed") >= n + 50, 10, what="readings queued while the broker is down")
    crashing.start()
    wait_for(lambda: gw.status()["broker"]["state"] == "connected", 15, what="gateway reconnects")
    collector.resume()
    return meters, after_save


def test_broker_kill9_after_puback_loses_nothing(
    sim: MeterRunner, mosquitto_factory: Callable[..., MosquittoService], unique_id: str, tmp_path: Any,
    wait_for: Callable[..., Any],
) -> None:  # fmt: skip
    """Mosquitto restarts from its last save and forgets what it PUBACKed since; the gateway kept those rows for
    ``replay_window_s`` (default 180 s) and re-publishes them on reconnecting, so every reading still arrives."""
    crashing = mosquitto_factory()
    collector = Collector(crashing, unique_id)
    gw = GatewayProcess(tmp_path, crashing, unique_id, [str(sim.link_dir / "*")])
    try:
        meters, after_save = _kill9_after_puback_scenario(sim, crashing, unique_id, wait_for, gw, collector)
        figures = check_delivery(meters, collector, gw, wait_for)
        assert figures["dropped_at_meter_truth"] == 0 and figures["dropped_full"] == 0
        assert gw.counter("replays") >= 1
        assert gw.counter("readings_replayed") >= after_save >= 100
        assert figures["duplicates"] > 0  # the replay re-sent what the broker had kept too: identical, checked
        assert gw.status()["queue"]["replay_rows"] > 0 and gw.status()["queue"]["replay_trimmed"] == 0
    finally:
        collector.close()
        gw.stop()


def test_broker_kill9_after_puback_without_replay_window_loses_readings(
    sim: MeterRunner, mosquitto_factory: Callable[..., MosquittoService], unique_id: str, tmp_path: Any,
    wait_for: Callable[..., Any],
) -> None:  # fmt: skip
    """Control for the test above: with ``replay_window_s = 0`` the same crash loses the readings PUBACKed after
    the save (the hole the replay window closes), so the test above can fail."""
    crashing = mosquitto_factory()
    collector = Collector(crashing, unique_id)
    gw = GatewayProcess(tmp_path, crashing, unique_id, [str(sim.link_dir / "*")], queue={"replay_window_s": 0})
    try:
        meters, after_save = _kill9_after_puback_scenario(sim, crashing, unique_id, wait_for, gw, collector)
        # a reading produced after the restart arrives after everything older that the broker still delivers
        last = {m.device: max(r.seq for r in m.truth().produced) for m in meters}

        def caught_up() -> bool:
            keys = collector.keys()
            return all(any(k[0] == d and k[2] > s for k in keys) for d, s in last.items())

        wait_for(caught_up, 15, what="readings from after the restart")
        keys = collector.keys()
        acked = {(m.device, b, s) for m in meters for b, s in m.truth().must_have() if s <= last[m.device]}
        missing = acked - keys
        assert len(missing) >= 100 and after_save >= 100, (len(missing), after_save)
        assert gw.counter("readings_replayed") == 0
    finally:
        collector.close()
        gw.stop()
