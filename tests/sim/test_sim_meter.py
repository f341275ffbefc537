"""The sans-IO meter model against the real codec: protocol rules of docs/protocol.md sections 2 and 3.

Time is simulated, so every test runs hours of meter life in milliseconds and is exactly reproducible.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import frames
from sim.frontend import FACTORY, Calibration
from sim.loads import Household, Standby
from sim.meter import MeterModel

START_MS = 1_768_478_400_000  # 2026-01-15 09:00 in São Paulo
DEVICE = "a1c5500000000001"
U32 = 0xFFFFFFFF


def decode(data: bytes) -> list[frames.Frame]:
    items = frames.Decoder().feed(data)
    errors = [i for i in items if isinstance(i, frames.FrameError)]
    assert not errors, errors
    return [i for i in items if not isinstance(i, frames.FrameError)]


def readings(items: list[frames.Frame]) -> list[frames.Reading]:
    return [i for i in items if isinstance(i, frames.Reading)]


def fresh(items: list[frames.Frame]) -> list[frames.Reading]:
    """Readings as first sent (not the resends)."""
    return [r for r in readings(items) if not r.flags & frames.FLAG_RESENT]


def statuses(items: list[frames.Frame]) -> list[frames.Status]:
    return [i for i in items if isinstance(i, frames.Status)]


def meter(**kwargs: object) -> MeterModel:
    kwargs.setdefault("report_period_ms", 1000)
    kwargs.setdefault("seed", 7)
    m = MeterModel(DEVICE, start_ms=START_MS, **kwargs)  # type: ignore[arg-type]
    m.advance(START_MS)  # boot output
    return m


def ack(boot: int, seq: int) -> bytes:
    return frames.encode(frames.Ack(boot, seq))


def test_boot_sends_resync_byte_hello_status_and_boot_log() -> None:
    m = MeterModel(DEVICE, start_ms=START_MS, seed=1, report_period_ms=500, boot_count=41)
    out = m.advance(START_MS)
    assert out.startswith(b"\x00")
    hello, status, log = decode(out)
    assert hello == frames.Hello(bytes.fromhex(DEVICE), 1, 1, 0, 1, 42, 500)  # firmware 1.1: READING2
    assert status == frames.Status(oldest_seq=1, next_seq=1, queued=0, dropped=0, rx_errors=0, sample_rate_hz=3200)
    assert log == frames.Log(1, "boot: power-on reset")


def test_uncalibrated_meter_flags_readings_and_logs_at_boot() -> None:
    m = MeterModel(DEVICE, start_ms=START_MS, seed=1, uncalibrated=True)
    out = decode(m.advance(START_MS + 1000))
    assert frames.Log(2, "calibration CRC bad or blank: factory values") in out
    (reading,) = readings(out)
    assert reading.flags & frames.FLAG_UNCALIBRATED
    # factory gains read a few per cent off the same load as a calibrated twin
    twin = readings(decode(MeterModel(DEVICE, start_ms=START_MS, seed=1).advance(START_MS + 1000)))[0]
    assert not twin.flags & frames.FLAG_UNCALIBRATED
    assert reading.vrms_mv != twin.vrms_mv and reading.vrms == pytest.approx(twin.vrms, rel=0.031)
    assert m.calibration == FACTORY


def test_one_reading_per_period_seq_from_one_and_consistent_fields() -> None:
    m = meter(report_period_ms=250)
    got = fresh(decode(m.advance(START_MS + 10 * 250)))
    assert [r.seq for r in got] == list(range(1, 11))
    assert [r.uptime_ms for r in got] == [250 * k for k in range(1, 11)]
    assert [bool(r.flags & frames.FLAG_FIRST_AFTER_BOOT) for r in got] == [True] + [False] * 9
    for r in got:
        assert r.flags & ~frames.FLAG_FIRST_AFTER_BOOT == 0
        assert 0.9 * 127 < r.vrms < 1.1 * 127
        assert 59.9 < r.freq_hz < 60.1
        assert 0 < r.power_w <= r.apparent_va + 0.1
        assert r.apparent_va == pytest.approx(r.vrms * r.irms, rel=1e-3)
        assert r.pf == pytest.approx(r.power_w / r.apparent_va, abs=2e-3)
    energies = [r.energy_mwh for r in got]
    assert energies == sorted(energies)


def test_cumulative_ack_releases_queue_and_status_reports_it() -> None:
    m = meter()
    m.advance(START_MS + 5000)
    assert m.status().queued == 5
    m.receive(ack(1, 3), START_MS + 5001)
    assert m.status() == frames.Status(4, 6, 2, 0, 0, 3200)
    assert m.truth().acked == {1: 3}
    assert m.truth().must_have() == {(1, 1), (1, 2), (1, 3)}


def test_ack_for_another_boot_is_ignored() -> None:
    m = meter()
    m.advance(START_MS + 5000)
    out = m.receive(ack(2, 5) + ack(0, 5), START_MS + 5001)
    assert out == b""
    assert m.status().queued == 5
    assert m.truth().acked == {}


def test_ack_beyond_last_sent_seq_releases_what_is_held() -> None:
    # cumulative, as in the firmware: a (buggy) ACK past the last reading releases everything held, nothing later
    m = meter()
    m.advance(START_MS + 3000)
    assert m.receive(ack(1, 5), START_MS + 3001) == b""
    assert m.status().queued == 0
    assert m.truth().acked == {1: 3}
    m.advance(START_MS + 5000)
    assert m.status().queued == 2


def test_stale_ack_does_not_move_back_and_gets_a_status() -> None:
    m = meter()
    m.advance(START_MS + 5000)
    m.receive(ack(1, 4), START_MS + 5001)
    # the gateway seems to wait for seq 3, which is no longer held: the meter says where it stands
    (status,) = decode(m.receive(ack(1, 2), START_MS + 5002))
    assert status == frames.Status(5, 6, 1, 0, 0, 3200)
    assert m.truth().acked[1] == 4


def test_resend_after_two_seconds_without_ack_progress() -> None:
    m = meter(report_period_ms=100)
    # seq 1 is queued at uptime 100: the timeout is max(2 s, 2 x 100 ms) = 2 s from then
    before = decode(m.advance(START_MS + 2099))
    assert not any(r.flags & frames.FLAG_RESENT for r in readings(before))
    out = decode(m.advance(START_MS + 2100))
    resent = [r for r in readings(out) if r.flags & frames.FLAG_RESENT]
    assert [r.seq for r in resent] == list(range(6, 22))  # the whole queue (the last 16), oldest first...
    assert isinstance(out[-1], frames.Status)  # ...then a STATUS
    original = {r.seq: r for r in readings(before)}
    for r in resent:  # same seq, uptime and values; only RESENT added
        if r.seq in original:
            assert r == type(r)(**{**_fields(original[r.seq]), "flags": original[r.seq].flags | 1})


def _fields(r: frames.Reading) -> dict[str, int]:
    return {f: getattr(r, f) for f in r.__struct_fields__}


def test_resend_timeout_is_twice_a_long_period() -> None:
    m = meter(report_period_ms=1500)
    assert not any(r.flags & frames.FLAG_RESENT for r in readings(decode(m.advance(START_MS + 4499))))
    assert [r.seq for r in readings(decode(m.advance(START_MS + 4500))) if r.flags & frames.FLAG_RESENT] == [1, 2, 3]


def test_ack_progress_postpones_resend() -> None:
    m = meter(report_period_ms=500)
    m.advance(START_MS + 1900)
    m.receive(ack(1, 2), START_MS + 1900)  # progress at 1.9 s: next resend at 3.9 s
    assert not any(r.flags & frames.FLAG_RESENT for r in readings(decode(m.advance(START_MS + 3899))))
    resent = [r.seq for r in readings(decode(m.advance(START_MS + 3900))) if r.flags & frames.FLAG_RESENT]
    assert resent == [3, 4, 5, 6, 7]


def test_no_resend_while_everything_is_acked() -> None:
    m = meter(report_period_ms=100)
    for k in range(1, 100):
        out = readings(decode(m.advance(START_MS + 100 * k)))
        assert not any(r.flags & frames.FLAG_RESENT for r in out)
        m.receive(ack(1, out[-1].seq), START_MS + 100 * k)


def test_queue_overflow_drops_oldest_and_counts() -> None:
    m = meter(queue_capacity=4, resend_min_ms=10**9)
    m.advance(START_MS + 10_000)  # 10 readings, never acknowledged
    st_ = m.status()
    assert (st_.oldest_seq, st_.next_seq, st_.queued, st_.dropped) == (7, 11, 4, 6)
    truth = m.truth()
    assert truth.dropped == {(1, s) for s in range(1, 7)}
    assert set(truth.unacked) == {(1, s) for s in range(7, 11)}
    assert truth.keys() == {(1, s) for s in range(1, 11)}


def test_ack_waiting_for_dropped_reading_gets_status() -> None:
    m = meter(queue_capacity=4, resend_min_ms=10**9)
    m.advance(START_MS + 10_000)
    # the gateway has nothing of this boot yet (ACK 0): it waits for seq 1, which the meter discarded
    (status,) = decode(m.receive(ack(1, 0), START_MS + 10_001))
    assert isinstance(status, frames.Status) and status.oldest_seq == 7 and status.dropped == 6
    # once it moved past them, no more STATUS
    assert m.receive(ack(1, 8), START_MS + 10_002) == b""


def test_reboot_keeps_energy_restarts_seq_and_loses_ram_queue() -> None:
    m = meter()
    m.advance(START_MS + 5000)
    m.receive(ack(1, 2), START_MS + 5000)
    energy = m.energy_mwh
    m.reboot(START_MS + 5500)
    out = decode(m.advance(START_MS + 6500))
    hello, status, log, first = out
    assert isinstance(hello, frames.Hello) and hello.boot_count == 2
    assert status == frames.Status(1, 1, 0, 0, 0, 3200)
    assert log == frames.Log(1, "boot: brown-out reset")
    assert isinstance(first, frames.Reading)
    assert first.seq == 1 and first.uptime_ms == 1000 and first.flags & frames.FLAG_FIRST_AFTER_BOOT
    assert first.energy_mwh >= energy  # register carried over, half window included
    truth = m.truth()
    assert truth.lost == {(2 - 1, s) for s in (3, 4, 5)}
    assert truth.boot_count == 2
    # an ACK for the old boot is ignored by the new one
    m.receive(ack(1, 1), START_MS + 6500)
    assert m.status().queued == 1


def test_reboot_with_downtime_is_silent_then_boots() -> None:
    m = meter()
    m.reboot(START_MS + 1500, off_ms=3000)
    assert len(readings(decode(m.advance(START_MS + 1500)))) == 1  # said before the reset
    assert m.advance(START_MS + 4499) == b""
    assert m.receive(frames.encode(frames.Sync()), START_MS + 4400) == b""  # nobody listens
    hello, _status, log = decode(m.advance(START_MS + 4500))
    assert isinstance(hello, frames.Hello) and hello.boot_count == 2
    assert log == frames.Log(1, "boot: power-on reset")


def test_sync_answers_hello_status_and_resends_unacked() -> None:
    m = meter()
    m.advance(START_MS + 3000)
    m.receive(ack(1, 1), START_MS + 3000)
    out = m.receive(frames.encode(frames.Sync()), START_MS + 3100)
    hello, status, r2, r3 = decode(out)
    assert isinstance(hello, frames.Hello) and hello.boot_count == 1
    assert isinstance(status, frames.Status) and (status.oldest_seq, status.next_seq) == (2, 4)
    assert isinstance(r2, frames.Reading) and isinstance(r3, frames.Reading)
    assert (r2.seq, r3.seq) == (2, 3) and r2.flags & r3.flags & frames.FLAG_RESENT


def test_status_every_ten_seconds() -> None:
    m = meter(report_period_ms=60_000)
    out = decode(m.advance(START_MS + 35_000))
    assert len(statuses(out)) == 3


def config(request_id: int = 7, **kw: int) -> bytes:
    return frames.encode(frames.Config(request_id, **kw))


def test_config_applied_changes_period_and_survives_reboot() -> None:
    m = meter()
    true = m.frontend.true
    (result,) = decode(m.receive(config(9, report_period_ms=250, v_gain=true.v_gain * 2), START_MS + 100))
    assert result == frames.ConfigResult(9, frames.CONFIG_APPLIED, 250, true.v_gain * 2, true.i_gain, 0)
    got = fresh(decode(m.advance(START_MS + 1600)))
    assert [r.uptime_ms for r in got] == [1000, 1250, 1500]  # the window in progress keeps its length
    # twice the true voltage gain: the meter reads twice the voltage (and power)
    assert got[-1].vrms > 2 * 115
    m.reboot(START_MS + 2000)
    (hello,) = [f for f in decode(m.advance(START_MS + 2000)) if isinstance(f, frames.Hello)]
    assert hello.boot_count == 2 and hello.report_period_ms == 250


@pytest.mark.parametrize(
    "fields",
    [
        {"report_period_ms": 249},
        {"report_period_ms": 3_600_001},
        {"v_gain": 10_000_001},
        {"i_gain": 10_000_001},
        {"phase_cdeg": 1001},
        {"phase_cdeg": -1001},
        {"report_period_ms": 500, "phase_cdeg": 2000},
    ],
    ids=["period-too-short", "period-too-long", "v-gain-too-big", "i-gain-too-big", "phase-high", "phase-low",
         "one-bad-field-rejects-all"],
)
def test_config_out_of_range_is_rejected_and_changes_nothing(fields: dict[str, int]) -> None:
    m = meter()
    true = m.frontend.true
    (result,) = decode(m.receive(config(3, **fields), START_MS + 10))
    assert result == frames.ConfigResult(3, frames.CONFIG_REJECTED, 1000, true.v_gain, true.i_gain, 0)
    assert [r.uptime_ms for r in readings(decode(m.advance(START_MS + 2000)))] == [1000, 2000]


def test_config_storage_error_applies_without_persisting() -> None:
    m = meter()
    m.storage_fails = True
    (result,) = decode(m.receive(config(4, report_period_ms=2000, phase_cdeg=-150), START_MS + 10))
    assert isinstance(result, frames.ConfigResult)
    assert (result.status, result.report_period_ms, result.phase_cdeg) == (frames.CONFIG_STORAGE_ERROR, 2000, -150)
    m.reboot(START_MS + 20)
    hello, *_ = decode(m.advance(START_MS + 20))
    assert isinstance(hello, frames.Hello) and hello.report_period_ms == 1000


def test_garbage_input_is_counted_and_survived() -> None:
    m = meter()
    m.advance(START_MS + 3000)
    reading_frame = frames.encode(frames.Reading(1, 2, 3, 4, 5, 6, 7, 8, 9))  # a meter -> gateway kind
    bad_crc = bytearray(frames.encode_raw(frames.Ack(1, 3)))
    bad_crc[-1] ^= 0xFF
    from cobs import cobs

    garbage = b"\xff" * 100 + b"\x00" + cobs.encode(bytes(bad_crc)) + b"\x00" + reading_frame + b"\x01\x00"
    m.receive(garbage, START_MS + 3001)
    assert m.status().rx_errors == 3  # oversize, crc, short (a well-formed meter -> gateway kind is ignored)
    m.receive(ack(1, 3), START_MS + 3002)
    assert m.status().queued == 0


def test_rx_errors_saturate_at_65535() -> None:
    m = meter()
    m.receive(b"\x01\x00" * 70_000, START_MS + 1)
    assert m.status().rx_errors == 65535


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_random_input_never_crashes_and_ack_still_works(chunks: list[bytes]) -> None:
    m = meter()
    t = START_MS
    for chunk in chunks:
        t += 100
        m.receive(chunk, t)
    t = START_MS + 3000
    m.advance(t)
    m.receive(b"\x00" + ack(m.boot_count, m.next_seq - 1), t)  # 0x00 ends whatever garbage was pending
    assert m.status().queued == 0
    assert 0 <= m.status().rx_errors <= 65535


def test_uptime_wraps_at_2_pow_32() -> None:
    m = meter(uptime_start_ms=U32 - 1500)
    got = fresh(decode(m.advance(START_MS + 3000)))
    assert [r.uptime_ms for r in got] == [U32 - 500, 499, 1499]


def test_clock_drift_stretches_uptime() -> None:
    m = meter(report_period_ms=10_000, drift_ppm=1000)  # 0.1 % fast
    got = fresh(decode(m.advance(START_MS + 1_000_000)))
    # 1000 s of real time is 1001 s on the meter's clock: 100 readings, the last one 1 s early
    assert len(got) == 100
    assert m.uptime_ms == 1_001_000
    m.set_drift_ppm(-1000, START_MS + 1_000_000)
    m.advance(START_MS + 2_000_000)
    assert m.uptime_ms == 1_001_000 + 999_000


def test_mains_off_sets_no_signal_and_stops_energy() -> None:
    m = meter()
    m.advance(START_MS + 2000)
    m.set_mains(False, START_MS + 2000)
    got = fresh(decode(m.advance(START_MS + 5000)))
    assert all(r.flags & frames.FLAG_NO_SIGNAL for r in got)
    assert all(r.freq_mhz == 0 and r.p_dw == 0 and r.pf_milli == 0 for r in got)
    assert len({r.energy_mwh for r in got}) == 1
    m.set_mains(True, START_MS + 5000)
    (back,) = fresh(decode(m.advance(START_MS + 6000)))
    assert not back.flags & frames.FLAG_NO_SIGNAL and back.energy_mwh > got[-1].energy_mwh


def test_sub_mwh_remainder_is_kept() -> None:
    # ~10 W standby sampled every 20 ms adds ~0.06 mWh per reading: only the kept remainder makes it count
    house = Household(3, 127, appliances=(Standby,))
    m = MeterModel(DEVICE, start_ms=START_MS, load=house, report_period_ms=20, integration_step_ms=20)
    last = fresh(decode(m.advance(START_MS + 600_000)))[-1]
    expected_mwh = sum(house.power((START_MS + 10 + 20 * k) / 1000) for k in range(30_000)) * 20 / 3600
    assert last.energy_mwh == pytest.approx(expected_mwh, rel=1e-3)
    assert last.energy_mwh > 1000


def test_energy_register_matches_integral_of_power_over_a_day() -> None:
    m = MeterModel(DEVICE, start_ms=START_MS, seed=11, report_period_ms=60_000, integration_step_ms=1000)
    day_ms = 86_400_000
    got = fresh(decode(m.advance(START_MS + day_ms)))
    assert len(got) == 1440
    # an independent integral of the same load, four times finer (0.25 s midpoint rule)
    load = Household(11, 127)
    step = 0.25
    reference_wh = sum(load.power(START_MS / 1000 + (k + 0.5) * step) for k in range(int(86_400 / step))) * step / 3600
    assert reference_wh > 3000  # a real household day, not an idle one
    assert got[-1].energy_mwh / 1000 == pytest.approx(reference_wh, rel=1e-3)
    # and window by window, the register grows by the reported power x the period
    prev = 0
    for r in got:
        assert abs((r.energy_mwh - prev) - r.power_w * 60 / 3.6) <= 1 + 0.05 * 60 / 3.6
        prev = r.energy_mwh


def test_same_seed_same_bytes_different_seed_different_bytes() -> None:
    def run(seed: int) -> bytes:
        m = MeterModel(DEVICE, start_ms=START_MS, seed=seed, report_period_ms=500)
        out = m.advance(START_MS)
        for k in range(1, 600):
            now = START_MS + 500 * k
            out += m.advance(now)
            if k % 7 == 0:
                out += m.receive(ack(1, k - 3), now)
        return out

    assert run(5) == run(5)
    assert run(5) != run(6)


@pytest.mark.parametrize("nominal", [127, 220])
def test_a_day_of_readings_fits_the_mqtt_contract(nominal: int) -> None:
    # every reading the meter makes must survive the gateway's conversion and the backend's validating decoder
    from protocol import mqtt

    m = MeterModel(DEVICE, start_ms=START_MS, seed=f"contract-{nominal}", nominal_v=nominal,
                   report_period_ms=30_000, integration_step_ms=1000, resend_min_ms=10**12)
    got = fresh(decode(m.advance(START_MS + 86_400_000)))
    assert len(got) == 2880
    for i in range(0, len(got), mqtt.MAX_BATCH):
        batch = mqtt.ReadingBatch(
            site="s", gateway="g",
            readings=[mqtt.reading_from_frame(DEVICE, 1, START_MS + 30_000 * r.seq, r) for r in got[i : i + 500]],
        )
        assert mqtt.batch_decoder.decode(mqtt.json_encoder.encode(batch)) == batch
    assert all(0 < r.pf_milli <= 1000 and r.s_dva >= r.p_dw > 0 for r in got)
    assert max(r.p_dw for r in got) > 10 * min(r.p_dw for r in got)  # the day has peaks and valleys


def test_sans_io_modules_import_no_port_machinery() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sim, sim.meter, sim.loads, sim.faults; "
        "print(sorted(m for m in sys.modules if m in ('serial', 'tty', 'termios', 'pty', 'sim.port', 'sim.runner')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == "[]"


def test_stored_factory_gains_still_count_as_uncalibrated() -> None:
    # the firmware's rule: UNCALIBRATED when nothing valid is stored or the gains in force are the factory ones
    m = MeterModel(DEVICE, start_ms=START_MS, seed=2, calibration=Calibration(*FACTORY))
    out = decode(m.advance(START_MS + 1000))
    assert not any(isinstance(f, frames.Log) and f.level == 2 for f in out)  # the EEPROM itself is fine
    assert readings(out)[0].flags & frames.FLAG_UNCALIBRATED
    (result,) = decode(m.receive(config(1, v_gain=FACTORY.v_gain + 1), START_MS + 1001))
    assert isinstance(result, frames.ConfigResult) and result.status == frames.CONFIG_APPLIED
    assert not readings(decode(m.advance(START_MS + 2000)))[0].flags & frames.FLAG_UNCALIBRATED


def test_reset_without_saving_restarts_the_register_from_the_last_minute_save() -> None:
    m = meter(report_period_ms=10_000)
    got = fresh(decode(m.advance(START_MS + 95_000)))
    assert [r.uptime_ms for r in got] == [10_000 * k for k in range(1, 10)]
    m.reboot(START_MS + 95_000, save_energy=False)  # a watchdog reset: no brown-out save
    assert m.energy_mwh == got[5].energy_mwh  # the save at uptime 60 s, after that window closed
    assert frames.Log(1, "boot: watchdog reset") in decode(m.advance(START_MS + 95_000))
    # with the brown-out save, nothing whole is lost
    m.reboot(START_MS + 99_000)
    assert m.energy_mwh >= got[5].energy_mwh


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("time"), st.integers(1, 5000)),
        st.tuples(st.just("ack"), st.integers(-3, 40)),
        st.tuples(st.just("ack-other-boot"), st.integers(0, 40)),
        st.tuples(st.just("sync"), st.just(0)),
        st.tuples(st.just("reboot"), st.integers(0, 1)),
        st.tuples(st.just("config"), st.integers(0, 2000)),
        st.tuples(st.just("garbage"), st.binary(max_size=30)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_OPS)
def test_ground_truth_accounts_for_every_reading_whatever_happens(ops: list[tuple[str, object]]) -> None:
    m = meter(report_period_ms=100, queue_capacity=6)
    now = START_MS
    last_energy: dict[int, int] = {}
    seen_fresh: dict[int, int] = {}
    for op, arg in ops:
        out: list[frames.Frame] = []
        if op == "time":
            assert isinstance(arg, int)
            now += arg
            out = decode(m.advance(now))
        elif op in ("ack", "ack-other-boot"):
            assert isinstance(arg, int)
            boot = m.boot_count if op == "ack" else m.boot_count + 1
            out = decode(m.receive(ack(boot, max(0, m.next_seq - 1 + arg if arg < 0 else arg)), now))
        elif op == "sync":
            out = decode(m.receive(frames.encode(frames.Sync()), now))
        elif op == "reboot":
            m.reboot(now, save_energy=bool(arg))
            out = decode(m.advance(now))
        elif op == "config":
            assert isinstance(arg, int)
            out = decode(m.receive(config(1, report_period_ms=arg), now))
        else:
            assert isinstance(arg, bytes)
            m.receive(arg + b"\x00", now)
        hello_boots = [f.boot_count for f in out if isinstance(f, frames.Hello)]
        if hello_boots:
            seen_fresh[hello_boots[-1]] = seen_fresh.get(hello_boots[-1], 0)
        for r in fresh(out):  # first transmissions come in seq order, one by one, within a boot
            assert r.seq == seen_fresh.get(m.boot_count, 0) + 1
            seen_fresh[m.boot_count] = r.seq
            assert r.energy_mwh >= last_energy.get(m.boot_count, 0)  # within a boot the register never falls
            last_energy[m.boot_count] = r.energy_mwh
        status = m.status()
        assert status.queued <= 6 and status.oldest_seq <= status.next_seq
        truth = m.truth()
        produced = truth.keys()
        released = {k for k in produced if k[1] <= truth.acked.get(k[0], 0)}
        unacked = set(truth.unacked)
        assert not (truth.lost & truth.dropped) and not (unacked & (truth.lost | truth.dropped | released))
        assert produced == released | truth.dropped | truth.lost | unacked
        assert truth.must_have() <= released and not (truth.must_have() & truth.may_miss())
