"""The meter's protocol state machine and EEPROM storage (firmware/lib/meter, firmware/lib/storage) on the host,
with the host HAL's emulated EEPROM: boot counter, queue and drops, cumulative ACK, go-back-N resend, SYNC,
STATUS, CONFIG ranges and storage errors, garbled input, energy persistence (both registers) and the wear-levelled
ring, including the upgrade from firmware 1.0's import-only ring."""

from __future__ import annotations

import binascii
import ctypes
from typing import Any

import pytest

from protocol import frames
from tests.firmware.fwlib import Calib, Result

pytestmark = pytest.mark.firmware

RESULT_220V_2KW = {
    "vrms_mv": 220000,
    "irms_ma": 10000,
    "p_mw": 2_000_000,
    "s_mva": 2_200_000,
    "pf_milli": 909,
    "freq_mhz": 60000,
    "clip": 0,
    "pairs": 3200,
}


class HostMeter:
    def __init__(self, cds: ctypes.CDLL) -> None:
        self.cds = cds
        self.decoder = frames.Decoder()
        self.raw = b""

    def boot(self, now: int = 0, period_ms: int = 1000) -> list[Any]:
        self.cds.cds_meter_boot(now, period_ms)
        return self.take()

    def take(self) -> list[Any]:
        buf = (ctypes.c_uint8 * 8192)()
        n = self.cds.cds_meter_take_tx(buf, 8192)
        data = bytes(buf[:n])
        self.raw = data
        out = self.decoder.feed(data)
        assert not [f for f in out if isinstance(f, frames.FrameError)], out
        return out

    def rx(self, data: bytes | frames.Frame, now: int) -> list[Any]:
        if not isinstance(data, bytes):
            data = frames.encode(data)
        buf = (ctypes.c_uint8 * max(1, len(data))).from_buffer_copy(data or b"\x00")
        self.cds.cds_meter_rx(buf, len(data), now)
        return self.take()

    def window(self, now: int, **over: int) -> list[Any]:
        r = Result(**{**RESULT_220V_2KW, **over})
        self.cds.cds_meter_window(ctypes.byref(r), now)
        return self.take()

    def poll(self, now: int) -> list[Any]:
        self.cds.cds_meter_poll(now)
        return self.take()


@pytest.fixture
def meter(cds: ctypes.CDLL) -> HostMeter:
    cds.cds_eeprom_erase()
    return HostMeter(cds)


def of(kind: type, fs: list[Any]) -> list[Any]:
    return [f for f in fs if isinstance(f, kind)]


def test_boot_sends_resync_zero_hello_status_and_counts_boots(meter: HostMeter) -> None:
    out = meter.boot()
    assert meter.raw[0] == 0
    assert isinstance(out[0], frames.Hello) and out[0].boot_count == 1 and out[0].device == "a1c5500000000001"
    assert out[1] == frames.Status(1, 1, 0, 0, 0, 0)
    assert of(frames.Log, out)  # "boot" and "factory calibration"
    assert meter.boot()[0].boot_count == 2
    assert meter.boot()[0].boot_count == 3


def test_readings_seq_from_one_with_first_after_boot_and_uncalibrated(meter: HostMeter) -> None:
    meter.boot()
    r1 = meter.window(1000)[0]
    r2 = meter.window(2000)[0]
    assert (r1.seq, r2.seq) == (1, 2)
    assert r1.flags == frames.FLAG_FIRST_AFTER_BOOT | frames.FLAG_UNCALIBRATED
    assert r2.flags == frames.FLAG_UNCALIBRATED
    assert (r1.vrms_mv, r1.irms_ma, r1.p_dw, r1.s_dva, r1.pf_milli) == (220000, 10000, 20000, 22000, 909)
    # 2 kW for 1 s = 555.56 mWh, then 1111.1 mWh: the remainder carries over
    assert (r1.energy_mwh, r2.energy_mwh) == (555, 1111)


def test_no_signal_reading_has_no_pf_or_frequency(meter: HostMeter) -> None:
    meter.boot()
    r = meter.window(1000, vrms_mv=5000, irms_ma=0, p_mw=0, s_mva=0, pf_milli=0, freq_mhz=59000)[0]
    assert r.flags & frames.FLAG_NO_SIGNAL
    assert (r.pf_milli, r.freq_mhz) == (0, 0)


def test_full_queue_drops_oldest_and_counts(meter: HostMeter) -> None:
    hello = meter.boot()[0]
    for k in range(1, 21):
        meter.window(k * 100)  # below the 2 s resend timeout
    out = meter.rx(frames.Ack(hello.boot_count, 2), 2050)
    # the gateway waits for seq 3, which was dropped: the meter says so in a STATUS
    assert out == [frames.Status(oldest_seq=5, next_seq=21, queued=16, dropped=4, rx_errors=0, sample_rate_hz=0)]


def test_cumulative_ack_for_this_boot_only(meter: HostMeter) -> None:
    hello = meter.boot()[0]
    for k in range(1, 6):
        meter.window(k * 100)
    assert meter.rx(frames.Ack(hello.boot_count + 1, 5), 600) == []  # another boot: ignored
    assert meter.rx(frames.Ack(hello.boot_count, 3), 600) == []
    out = meter.rx(frames.Sync(), 700)
    assert isinstance(out[0], frames.Hello) and isinstance(out[1], frames.Status)
    assert out[1].oldest_seq == 4 and out[1].queued == 2
    assert [(r.seq, r.flags & frames.FLAG_RESENT) for r in out[2:]] == [(4, 1), (5, 1)]


def test_no_ack_progress_resends_all_oldest_first_then_status(meter: HostMeter) -> None:
    hello = meter.boot(0)[0]
    meter.window(1000)
    meter.window(2000)
    assert meter.poll(2999) == []
    out = meter.poll(3000)  # 2 s after the first unacknowledged reading
    assert [(f.seq, f.flags & frames.FLAG_RESENT) for f in of(frames.Reading, out)] == [(1, 1), (2, 1)]
    assert isinstance(out[-1], frames.Status)
    assert of(frames.Reading, out)[0].uptime_ms == 1000  # resent readings keep their values
    assert meter.poll(4999) == []
    assert len(of(frames.Reading, meter.poll(5000))) == 2  # again after another timeout
    meter.rx(frames.Ack(hello.boot_count, 2), 5100)
    assert meter.poll(9000) == []  # everything acknowledged: nothing to resend


def test_resend_timeout_is_twice_a_long_report_period(meter: HostMeter) -> None:
    hello = meter.boot(0)[0]
    out = meter.rx(frames.Config(1, report_period_ms=5000), 10)
    assert out[0].status == frames.CONFIG_APPLIED
    meter.window(5000)
    assert of(frames.Reading, meter.poll(14_999)) == []
    assert len(of(frames.Reading, meter.poll(15_000))) == 1
    meter.rx(frames.Ack(hello.boot_count, 1), 15_001)


def test_status_every_10_s(meter: HostMeter) -> None:
    meter.boot(0)
    assert meter.poll(9999) == []
    assert of(frames.Status, meter.poll(10_000))
    assert of(frames.Status, meter.poll(20_000))


def test_config_applied_stored_and_kept_across_boots(meter: HostMeter, cds: ctypes.CDLL) -> None:
    meter.boot()
    out = meter.rx(frames.Config(9, report_period_ms=2000, v_gain=612345, i_gain=98765, phase_cdeg=-250), 10)
    assert out == [frames.ConfigResult(9, 0, 2000, 612345, 98765, -250)]
    out = meter.rx(frames.Config(10, phase_cdeg=120), 20)  # 0 / -32768 keep the other values
    assert out == [frames.ConfigResult(10, 0, 2000, 612345, 98765, 120)]
    out = meter.boot()
    assert out[0].report_period_ms == 2000
    assert not any("factory" in f.text for f in of(frames.Log, out))
    c = Calib()
    assert cds.cds_meter_calib(ctypes.byref(c)) == 1
    assert (c.v_gain, c.i_gain, c.phase_cdeg) == (612345, 98765, 120)
    assert meter.window(2000)[0].flags & frames.FLAG_UNCALIBRATED == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"report_period_ms": 249},
        {"report_period_ms": 3_600_001},
        {"v_gain": 10_000_001},
        {"i_gain": 10_000_001},
        {"phase_cdeg": 1001},
        {"phase_cdeg": -1001},
    ],
    ids=lambda d: "_".join(f"{k}_{v}" for k, v in d.items()),
)
def test_config_out_of_range_rejected_and_nothing_changed(meter: HostMeter, bad: dict[str, int]) -> None:
    meter.boot()
    out = meter.rx(frames.Config(7, **{"report_period_ms": 500, "v_gain": 5, **bad}), 10)
    assert out == [frames.ConfigResult(7, frames.CONFIG_REJECTED, 1000, 976563, 146484, 0)]


def test_config_range_limits_accepted(meter: HostMeter) -> None:
    meter.boot()
    out = meter.rx(frames.Config(1, 250, 1, 10_000_000, -1000), 10)
    assert out == [frames.ConfigResult(1, 0, 250, 1, 10_000_000, -1000)]
    out = meter.rx(frames.Config(2, 3_600_000, 10_000_000, 1, 1000), 10)
    assert out == [frames.ConfigResult(2, 0, 3_600_000, 10_000_000, 1, 1000)]


def test_config_storage_error_applies_but_reports_status_2(meter: HostMeter, cds: ctypes.CDLL) -> None:
    meter.boot()
    cds.cds_eeprom_fail(1)
    out = meter.rx(frames.Config(3, report_period_ms=500), 10)
    assert out == [frames.ConfigResult(3, frames.CONFIG_STORAGE_ERROR, 500, 976563, 146484, 0)]
    cds.cds_eeprom_fail(0)


def test_garbled_and_truncated_commands_counted_meter_keeps_working(meter: HostMeter) -> None:
    hello = meter.boot()[0]
    meter.window(1000)
    ack = frames.encode(frames.Ack(hello.boot_count, 1))
    bad_crc = bytearray(ack)
    bad_crc[3] ^= 0x40
    assert meter.rx(bytes(bad_crc), 1100) == []
    assert meter.rx(ack[:5] + b"\x00", 1100) == []  # truncated
    assert meter.rx(b"\x01" * 200 + b"\x00", 1100) == []  # oversize run
    out = meter.rx(frames.Sync(), 1200)
    assert out[1].rx_errors == 3
    assert out[1].queued == 1
    meter.rx(ack, 1300)  # the good command after the garbage still works
    assert meter.rx(frames.Sync(), 1400)[1].queued == 0


def test_energy_saved_once_a_minute_and_restored_after_reset(meter: HostMeter) -> None:
    meter.boot(0)
    for k in range(1, 61):
        r = meter.window(k * 1000)[0]
        meter.poll(k * 1000)
    saved = r.energy_mwh  # the save at 60 s holds the register of window 60
    meter.window(61_000)
    hello = meter.boot(0)[0]
    assert hello.boot_count == 2
    first = meter.window(1000)[0]
    assert first.flags & frames.FLAG_FIRST_AFTER_BOOT
    assert first.energy_mwh == saved + 555


def test_readings_are_reading2_with_import_and_export_registers(meter: HostMeter) -> None:
    meter.boot()
    night = meter.window(1000)[0]  # 2 kW from the grid
    noon = meter.window(2000, p_mw=-3_000_000, pf_milli=-1000)[0]  # 3 kW to the grid
    assert type(night) is frames.Reading2 and type(noon) is frames.Reading2
    assert (night.p_dw, night.energy_mwh, night.energy_export_mwh) == (20_000, 555, 0)
    assert (noon.p_dw, noon.pf_milli, noon.energy_mwh, noon.energy_export_mwh) == (-30_000, -1000, 555, 833)
    # resent readings carry both registers unchanged, and their seq though it is not stored in the ring
    resent = of(frames.Reading2, meter.poll(10_000))
    assert [(r.seq, r.energy_mwh, r.energy_export_mwh) for r in resent] == [(1, 555, 0), (2, 555, 833)]


def test_both_registers_saved_and_restored_after_reset(meter: HostMeter, cds: ctypes.CDLL) -> None:
    meter.boot(0)
    for k in range(1, 61):
        r = meter.window(k * 1000, p_mw=-3_000_000 if k % 2 else 2_000_000)[0]
        meter.poll(k * 1000)
    saved = (r.energy_mwh, r.energy_export_mwh)
    assert saved == (16_666, 25_000)  # 30 s at 2 kW, 30 s at 3 kW exported
    meter.window(61_000)
    meter.boot(0)
    first = meter.window(1000, p_mw=-3_000_000)[0]
    assert (first.energy_mwh, first.energy_export_mwh) == (saved[0], saved[1] + 833)
    assert (cds.cds_meter_energy(), cds.cds_meter_export()) == (saved[0], saved[1] + 833)


def test_export_change_alone_is_saved(meter: HostMeter) -> None:
    meter.boot(0)
    meter.window(1000, p_mw=-3_600_000)  # 1 Wh exported, import unchanged
    meter.poll(60_000)
    meter.boot(0)
    assert meter.window(1000, p_mw=0)[0].energy_export_mwh == 1000


def _v1_slot(rec_seq: int, boot: int, energy_mwh: int) -> bytes:
    """A slot as firmware 1.0 wrote it: rec_seq u32 | boot u32 | energy u48 | CRC-16/CCITT-FALSE ^ 0xE4E7."""
    body = rec_seq.to_bytes(4, "little") + boot.to_bytes(4, "little") + energy_mwh.to_bytes(6, "little")
    return body + (binascii.crc_hqx(body, 0xFFFF) ^ 0xE4E7).to_bytes(2, "little")


def test_upgrade_from_import_only_ring_keeps_register_and_boot_count(meter: HostMeter, cds: ctypes.CDLL) -> None:
    ee = cds.cds_eeprom()
    for slot, (seq, boot, mwh) in enumerate([(40, 9, 7_000_000), (41, 10, 7_250_000), (39, 9, 6_900_000)]):
        for k, b in enumerate(_v1_slot(seq, boot, mwh)):
            ee[0x20 + slot * 16 + k] = b
    assert meter.boot(0)[0].boot_count == 11  # the newest 1.0 record: boot 10
    r = meter.window(1000)[0]
    assert (r.energy_mwh, r.energy_export_mwh) == (7_250_555, 0)
    # the first save in the new format went to the slot after the 1.0 record, leaving it intact
    assert bytes(ee[0x20 + 16 : 0x20 + 32]) == _v1_slot(41, 10, 7_250_000)
    assert meter.boot(0)[0].boot_count == 12  # now read from the new ring
    assert meter.window(1000)[0].energy_mwh == 7_250_555  # the 1.0 record was not read again


def test_rec_seq_wraps_around_without_losing_the_newest_record(meter: HostMeter, cds: ctypes.CDLL) -> None:
    # 8-bit record numbers: 300 saves wrap them, the newest record must still win
    for _ in range(300):
        meter.boot(0)
    assert meter.boot(0)[0].boot_count == 301


def test_wear_levelling_spreads_saves_over_all_slots(meter: HostMeter, cds: ctypes.CDLL) -> None:
    slots = cds.cds_storage_slots()
    assert slots * 16 + 0x20 <= 1024
    meter.boot(0)
    t = 0
    saves = 3 * slots
    for _ in range(saves - 1):  # the boot itself was the first save
        t += 60_000
        meter.window(t)
        meter.poll(t)
    writes = cds.cds_eeprom_writes()
    ring = [writes[a] for a in range(0x20, 0x20 + slots * 16)]
    # every slot's sequence number byte changes each time the slot is written: 3 writes each
    assert [ring[s * 16] for s in range(slots)] == [3] * slots
    assert max(ring) <= 3
    # the wear of 10 years at one save per minute, spread over the ring
    assert 10 * 365.25 * 24 * 60 / slots < 100_000


def test_torn_write_falls_back_to_previous_record(meter: HostMeter, cds: ctypes.CDLL) -> None:
    meter.boot(0)  # record: boot 1
    meter.boot(0)  # record: boot 2, in the next slot
    ee = cds.cds_eeprom()
    ee[0x20 + 16 + 9] ^= 0xFF  # a power cut mid-write garbles the newest slot
    assert meter.boot(0)[0].boot_count == 2  # boot 1 record + 1


def test_bad_calibration_crc_restores_factory_values(meter: HostMeter, cds: ctypes.CDLL) -> None:
    meter.boot()
    meter.rx(frames.Config(1, 2000, 500000, 100000, 50), 10)
    cds.cds_eeprom()[3] ^= 0x01
    out = meter.boot()
    assert out[0].report_period_ms == 1000
    assert any("factory" in f.text for f in of(frames.Log, out))
    assert meter.window(1000)[0].flags & frames.FLAG_UNCALIBRATED
