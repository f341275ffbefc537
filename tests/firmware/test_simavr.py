"""The real AVR firmware (the same ELF that is flashed) on a simulated ATmega328P: the libsimavr harness injects
front-end waveforms into ADC0/ADC1 and bridges UART0 to a pty; protocol.frames decodes what the meter sends."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from protocol import frames
from tests.firmware.fwlib import SimMeter

pytestmark = pytest.mark.firmware

Start = Callable[..., SimMeter]


def analytic(
    vrms: float, irms: float, phase: float, vh3: float = 0, vh5: float = 0, ih3: float = 0, ih5: float = 0
) -> tuple[float, float, float]:
    phi = math.radians(phase)
    v = vrms * math.sqrt(1 + vh3**2 + vh5**2)
    i = irms * math.sqrt(1 + ih3**2 + ih5**2)
    p = vrms * irms * (math.cos(phi) + vh3 * ih3 * math.cos(3 * phi) + vh5 * ih5 * math.cos(5 * phi))
    return v, i, p


SIM_CASES = {
    "127v_resistive": {"vrms": 127.0, "irms": 7.874, "phase": 0.0},
    "220v_inductive_pf05": {"vrms": 220.0, "irms": 22.727, "phase": 60.0},
    "127v_capacitive_harmonics_dc_noise": {
        "vrms": 127.0,
        "irms": 6.0,
        "phase": -30.0,
        "vh3": 0.03,
        "ih3": 0.3,
        "ih5": 0.1,
        "vdc": 40.0,
        "idc": -25.0,
        "noise": 5.0,
    },
}


def harness_args(params: dict[str, float]) -> list[str]:
    return [a for k, v in params.items() for a in (f"--{k}", str(v))]


def reading(sm: SimMeter, pred: Callable[[frames.Reading], bool] | None = None) -> frames.Reading:
    f = sm.next_of(frames.Reading, pred=pred)
    assert isinstance(f, frames.Reading)
    return f


@pytest.mark.parametrize("name", list(SIM_CASES))
def test_hello_and_readings_match_injected_waveform(simmeter: Start, name: str, figure: Callable[[str], None]) -> None:
    params = SIM_CASES[name]
    sm = simmeter("-t", "20", *harness_args(params))
    hello = sm.next_of(frames.Hello)
    assert isinstance(hello, frames.Hello)
    assert hello.device == "a1c5500000000001" and hello.report_period_ms == 1000 and hello.boot_count == 1
    first = reading(sm)
    assert first.seq == 1 and first.flags & frames.FLAG_FIRST_AFTER_BOOT
    v, i, p = analytic(**{k: params[k] for k in ("vrms", "irms", "phase", "vh3", "vh5", "ih3", "ih5") if k in params})
    worst = {"v": 0.0, "i": 0.0, "p": 0.0, "pf": 0.0, "f": 0.0}
    for seq in (2, 3):
        r = reading(sm, lambda f, s=seq: f.seq == s)  # type: ignore[misc]
        sm.send(frames.Ack(hello.boot_count, r.seq))
        worst["v"] = max(worst["v"], abs(r.vrms - v) / v)
        worst["i"] = max(worst["i"], abs(r.irms - i) / i)
        worst["p"] = max(worst["p"], abs(r.power_w - p) / p)
        worst["pf"] = max(worst["pf"], abs(r.pf - p / (v * i)))
        worst["f"] = max(worst["f"], abs(r.freq_hz - 60.0))
        assert r.flags & ~frames.FLAG_UNCALIBRATED == 0
    sm.send(frames.Sync())
    status = sm.next_of(frames.Status, pred=lambda s: s.next_seq >= 4)
    assert isinstance(status, frames.Status)
    stats = sm.stop()
    figure(
        f"simavr {name}: V {worst['v'] * 100:.3f} %  I {worst['i'] * 100:.3f} %  P {worst['p'] * 100:.3f} %  "
        f"PF {worst['pf']:.4f}  f {worst['f'] * 1000:.1f} mHz  sample pairs/s {status.sample_rate_hz}  "
        f"harness {stats.get('ratio', 0):.2f} sim-s/s, {stats.get('conv_rate', 0):.1f} conversions/s"
    )
    assert worst["v"] < 0.01 and worst["i"] < 0.01 and worst["p"] < 0.01
    assert worst["pf"] < 0.01 and worst["f"] < 0.05
    assert 3180 <= status.sample_rate_hz <= 3200
    assert status.rx_errors == 0


EXPORT_CASES = {
    "220v_export_pf1": {"vrms": 220.0, "irms": 10.0, "phase": 180.0},
    "127v_export_harmonics": {"vrms": 127.0, "irms": 15.0, "phase": 180.0, "vh3": 0.03, "vh5": 0.02, "ih3": 0.08,
                              "ih5": 0.05},
}


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_exported_energy_register_matches_injected_export(
    simmeter: Start, name: str, figure: Callable[[str], None]
) -> None:
    """Current in antiphase (an inverter exporting): READING2 with negative power, the export register grows by
    the exported energy within 0.5 % and the import register stands still."""
    params = EXPORT_CASES[name]
    sm = simmeter("-t", "16", *harness_args(params))
    hello = sm.next_of(frames.Hello)
    assert isinstance(hello, frames.Hello)
    _, _, p = analytic(**{k: params[k] for k in ("vrms", "irms", "phase", "vh3", "vh5", "ih3", "ih5") if k in params})
    got: dict[int, frames.Reading2] = {}
    while len(got) < 12:
        r = reading(sm, lambda f: f.seq not in got and not f.flags & frames.FLAG_RESENT)
        assert isinstance(r, frames.Reading2)
        got[r.seq] = r
        sm.send(frames.Ack(hello.boot_count, r.seq))
    sm.stop()
    a, b = got[2], got[12]  # ten whole windows after the first one of the boot
    exported = b.energy_export_mwh - a.energy_export_mwh
    seconds = (b.uptime_ms - a.uptime_ms) / 1000
    expected = -p * seconds / 3.6
    err = (exported - expected) / expected
    worst_p = max(abs(r.power_w - p) / -p for s, r in got.items() if s >= 2)
    figure(
        f"simavr export {name}: {exported} mWh vs {expected:.0f} mWh analytic over {seconds:.1f} s: "
        f"{err * 100:+.3f} %  (worst window P {worst_p * 100:.3f} %)"
    )
    assert all(r.p_dw < 0 and r.energy_mwh == a.energy_mwh for s, r in got.items() if s >= 2)
    assert abs(err) < 0.005
    assert worst_p < 0.005


def test_no_ack_gives_resent_readings_and_ack_stops_them(simmeter: Start) -> None:
    sm = simmeter("-t", "30", "--vrms", "220", "--irms", "5")
    hello = sm.next_of(frames.Hello)
    assert isinstance(hello, frames.Hello)
    # nothing acknowledged: 2 s after reading 1 the meter resends 1 and 2 (RESENT), then a STATUS
    resent = reading(sm, lambda f: bool(f.flags & frames.FLAG_RESENT))
    assert resent.seq == 1
    again = reading(sm)
    assert again.seq == 2 and again.flags & frames.FLAG_RESENT
    status = sm.next_of(frames.Status)
    assert isinstance(status, frames.Status) and status.oldest_seq == 1 and status.queued >= 2
    sm.send(frames.Ack(hello.boot_count, again.seq))
    # from now on every fresh reading is acknowledged as it arrives: no more resends
    later: list[Any] = []
    last = again.seq
    while last < again.seq + 5:
        f = sm.next_frame(lambda f: isinstance(f, frames.Reading | frames.Status), what="reading")
        later.append(f)
        if isinstance(f, frames.Reading) and not f.flags & frames.FLAG_RESENT:
            last = f.seq
            sm.send(frames.Ack(hello.boot_count, f.seq))
    fresh = [f.seq for f in later if isinstance(f, frames.Reading) and not f.flags & frames.FLAG_RESENT]
    assert fresh == list(range(again.seq + 1, again.seq + 6))
    assert [f for f in later if isinstance(f, frames.Reading) and f.flags & frames.FLAG_RESENT] == []
    # SYNC resends what is not acknowledged yet: HELLO, STATUS, then nothing (all acked)
    sm.send(frames.Sync())
    st = sm.next_of(frames.Status, pred=lambda s: s.next_seq == last + 1 or s.next_seq == last + 2)
    assert isinstance(st, frames.Status) and st.dropped == 0


def test_reset_increments_boot_count_and_keeps_energy(simmeter: Start, tmp_path: Path) -> None:
    eeprom = tmp_path / "eeprom.bin"
    sm = simmeter("-t", "120", "--vrms", "220", "--irms", "20", eeprom=eeprom)
    hello = sm.next_of(frames.Hello)
    assert isinstance(hello, frames.Hello) and hello.boot_count == 1
    by_seq: dict[int, frames.Reading] = {}
    while 61 not in by_seq:  # the energy register is saved once a minute
        r = reading(sm, lambda f: not f.flags & frames.FLAG_RESENT)
        by_seq[r.seq] = r
        sm.send(frames.Ack(hello.boot_count, r.seq))
    per_window = by_seq[60].energy_mwh - by_seq[59].energy_mwh
    assert per_window == pytest.approx(4400 / 3.6, rel=0.01)  # 4.4 kW for one second, in mWh
    sm.reset()
    hello2 = sm.next_of(frames.Hello, pred=lambda h: h.boot_count != hello.boot_count)
    assert isinstance(hello2, frames.Hello) and hello2.boot_count == hello.boot_count + 1
    first = reading(sm, lambda f: f.seq == 1)
    assert first.flags & frames.FLAG_FIRST_AFTER_BOOT
    # the register continues from the value saved at the 60 s mark (the register after window 59 or 60,
    # depending on which side of the mark window 60 closed), plus the energy of this boot's first window
    restored = first.energy_mwh - first.p_dw / 10 / 3.6
    assert any(abs(restored - by_seq[k].energy_mwh) <= 0.01 * per_window + 1 for k in (59, 60)), (
        restored,
        by_seq[59].energy_mwh,
        by_seq[60].energy_mwh,
    )
    stats = sm.stop()
    assert stats["resets"] == 1
    assert eeprom.stat().st_size == 1024  # the harness persisted the EEPROM image
    # a power cycle: a new harness process on the saved EEPROM image
    sm2 = simmeter("-t", "10", "--vrms", "220", "--irms", "20", eeprom=eeprom)
    hello3 = sm2.next_of(frames.Hello)
    assert isinstance(hello3, frames.Hello) and hello3.boot_count == hello.boot_count + 2
    again = reading(sm2, lambda f: f.seq == 1)
    assert again.energy_mwh >= restored


def test_garbled_commands_counted_then_config_applied(simmeter: Start) -> None:
    sm = simmeter("-t", "30", "--vrms", "127", "--irms", "3", "--device-id", "a1c5500000000042")
    hello = sm.next_of(frames.Hello)
    assert isinstance(hello, frames.Hello)
    assert hello.device == "a1c5500000000042"  # the factory identity record in EEPROM
    ack = frames.encode(frames.Ack(hello.boot_count, 0))
    garbled = bytearray(ack)
    garbled[4] ^= 0x10
    sm.send_bytes(bytes(garbled))  # CRC error
    sm.send_bytes(ack[:6] + b"\x00")  # truncated
    sm.send_bytes(os.urandom(8).replace(b"\x00", b"\x01") * 12 + b"\x00")  # oversize noise
    sm.send(frames.Config(77, report_period_ms=100))  # out of range: rejected
    rej = sm.next_of(frames.ConfigResult)
    assert rej == frames.ConfigResult(77, frames.CONFIG_REJECTED, 1000, 976563, 146484, 0)
    sm.send(frames.Config(78, report_period_ms=500))
    ok = sm.next_of(frames.ConfigResult)
    assert ok == frames.ConfigResult(78, frames.CONFIG_APPLIED, 500, 976563, 146484, 0)
    a = reading(sm, lambda f: not f.flags & frames.FLAG_RESENT)
    b = reading(sm, lambda f: f.seq == a.seq + 1)
    assert b.uptime_ms - a.uptime_ms == 500
    assert b.vrms == pytest.approx(127.0, rel=0.01)
    sm.send(frames.Sync())
    st = sm.next_of(frames.Status, pred=lambda s: s.next_seq > b.seq)
    assert isinstance(st, frames.Status) and st.rx_errors == 3
