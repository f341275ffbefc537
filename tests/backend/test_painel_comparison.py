"""The dashboard's "hoje" beside the same stretch of yesterday: a comparison only when every hour of that stretch
has readings (a fresh install whose rollups were still catching up on yesterday showed +21 641 % against 0.0 kWh)."""

from __future__ import annotations

import pytest

from backend.api.painel import stretch_kwh
from backend.store.registers import Bucket
from protocol.timebase import HOUR_MS

START = 1_780_000_000_000 // HOUR_MS * HOUR_MS


def hours(kwh: list[float], *, estimated: bool = False, injecao: float | None = None) -> list[Bucket]:
    return [Bucket(start="", start_ms=START + i * HOUR_MS, end_ms=START + (i + 1) * HOUR_MS, kwh=k,
                   estimated=estimated, injecao_kwh=injecao) for i, k in enumerate(kwh)]


def test_a_covered_stretch_sums_its_hours_and_the_elapsed_part_of_the_last() -> None:
    before = [Bucket(start="", start_ms=START - HOUR_MS, end_ms=START, kwh=16.0)]  # the day before: not counted
    assert stretch_kwh(before + hours([1.0, 2.0, 4.0, 8.0]), START, 2 * HOUR_MS + HOUR_MS // 4) == pytest.approx(4.0)


@pytest.mark.parametrize(("kwh", "why"), [([0.0, 2.0, 4.0], "the meter's first reading came in the second hour"),
                                          ([1.0, 2.0], "the rollups have not reached the third hour yet"),
                                          ([], "nothing at all")])
def test_a_stretch_not_covered_hour_by_hour_is_no_comparison(kwh: list[float], why: str) -> None:
    assert stretch_kwh(hours(kwh), START, 3 * HOUR_MS) is None, why


def test_hours_of_spread_gap_energy_or_of_injection_only_have_readings() -> None:
    assert stretch_kwh(hours([0.5, 0.5], estimated=True), START, 2 * HOUR_MS) == pytest.approx(1.0)
    assert stretch_kwh(hours([0.0, 0.0], injecao=1.2), START, 2 * HOUR_MS) == 0.0  # a solar home drew nothing
