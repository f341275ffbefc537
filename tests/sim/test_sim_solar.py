"""PV systems and solar households (sim/solar.py), and the meter model's import and export registers."""

from __future__ import annotations

import datetime as dt

import pytest

from protocol import frames
from sim.loads import LocalClock
from sim.meter import MeterModel
from sim.solar import CLEAR_SKY_GHI_W_M2, PERFORMANCE_RATIO, PvSystem, clear_sky_ghi, cos_zenith, solar_household

BRT = dt.timezone(dt.timedelta(hours=-3))


def at(day: int, hour: float, month: int = 1) -> float:
    return dt.datetime(2026, month, day, tzinfo=BRT).timestamp() + hour * 3600


def test_clear_sky_curve_dark_at_night_highest_near_noon_and_higher_in_summer() -> None:
    assert clear_sky_ghi(cos_zenith(15, 0.0)) == 0.0
    noon_summer = clear_sky_ghi(cos_zenith(15, 12.0))
    noon_winter = clear_sky_ghi(cos_zenith(196, 12.0))
    assert 950 < noon_summer < 1100 and 550 < noon_winter < noon_summer
    day = [clear_sky_ghi(cos_zenith(15, h / 4)) for h in range(96)]
    assert max(range(96), key=day.__getitem__) in range(46, 51)  # 11:30-12:30


def test_pv_output_is_negative_bounded_by_kwp_and_seeded() -> None:
    pv = PvSystem("roof", LocalClock(), kwp=4.0)
    again = PvSystem("roof", LocalClock(), kwp=4.0)
    other = PvSystem("other-roof", LocalClock(), kwp=4.0)
    times = [at(d, h / 6) for d in (10, 11, 12) for h in range(144)]
    out = [pv.power(t, 1.0)[0] for t in times]
    assert all(-4.0 * CLEAR_SKY_GHI_W_M2 * PERFORMANCE_RATIO <= p <= 0.0 for p in out)
    assert out == [again.power(t, 1.0)[0] for t in times]  # a pure function of time and seed
    assert out != [other.power(t, 1.0)[0] for t in times]
    with pytest.raises(ValueError):
        PvSystem("roof", LocalClock(), kwp=0)


def test_clouds_dim_some_days_below_clear_sky() -> None:
    pv = PvSystem("cloudy?", LocalClock(), kwp=4.0)
    shortfalls = []
    for d in range(1, 29):
        times = [at(d, 6 + k / 60) for k in range(12 * 60)]
        clear = sum(pv.clear_sky_w(t) for t in times)
        real = -sum(pv.power(t, 1.0)[0] for t in times)
        shortfalls.append(1 - real / clear)
    assert min(shortfalls) < 0.05 and max(shortfalls) > 0.2  # clear days and cloudy ones in four weeks


def test_solar_household_imports_at_night_and_exports_at_noon() -> None:
    house = solar_household("casa-solar", 220, kwp=5.0)
    night = [house.sample(at(14, h)) for h in (0.5, 1.5, 2.5, 3.5, 22.5, 23.5)]
    noon = [house.sample(at(14, 11 + k / 6)) for k in range(12)]
    assert all(s.p > 0 for s in night)
    assert sum(s.p for s in noon) / len(noon) < -1500
    assert all(s.pf < 0 for s in noon if s.p < -500)  # power flows out: negative PF
    assert max(s.vrms for s in noon) > max(s.vrms for s in night)  # the voltage rises while exporting


def test_meter_model_fills_import_and_export_registers_like_the_firmware() -> None:
    start = int(at(14, 11.5) * 1000)
    house = solar_household("casa-solar", 220, kwp=5.0)
    m = MeterModel("a1c5500000000042", start_ms=start, load=house, report_period_ms=1000)
    out = frames.Decoder().feed(m.advance(start + 600_000))
    readings = [f for f in out if isinstance(f, frames.Reading2) and not f.flags & frames.FLAG_RESENT]
    assert len(readings) == 600 and all(f.p_dw < 0 for f in readings)
    exported_j = -sum(house.power(start / 1000 + k / 10 + 0.05) for k in range(6000)) / 10
    assert m.export_mwh == pytest.approx(exported_j / 3.6, rel=0.002)
    assert readings[-1].energy_export_mwh == m.export_mwh and readings[-1].energy_mwh == m.energy_mwh == 0
    m.reboot(start + 600_000)
    assert m.truth().export_mwh == m.export_mwh > 0  # saved across a reset like the import register


def test_import_only_meter_sends_reading_and_counts_no_export() -> None:
    start = int(at(14, 11.5) * 1000)
    m = MeterModel("a1c5500000000043", start_ms=start, load=solar_household("casa", 220, kwp=5.0),
                   bidirectional=False)  # fmt: skip
    out = frames.Decoder().feed(m.advance(start + 10_000))
    hello = next(f for f in out if isinstance(f, frames.Hello))
    readings = [f for f in out if isinstance(f, frames.Reading)]
    assert hello.firmware == "1.0.0"
    assert readings and all(type(f) is frames.Reading and f.p_dw < 0 for f in readings)
    assert m.export_mwh == 0 and m.energy_mwh == 0
