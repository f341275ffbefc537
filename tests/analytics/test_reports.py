"""Reports: rows per local day/week/month, cost per posto and day, pt-BR CSV formatting."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from backend.analytics.reports import build_report, fmt_br, to_csv
from backend.aneel.postos import KNOWN_WINDOWS
from backend.store.registers import Bucket

T0 = int(dt.datetime(2026, 4, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3))).timestamp() * 1000)
H = 3_600_000


def hourly(days: int, kwh: float = 0.5) -> list[Bucket]:
    return [Bucket(start="", start_ms=T0 + i * H, end_ms=T0 + (i + 1) * H, kwh=kwh) for i in range(24 * days)]


@pytest.mark.parametrize(("value", "decimals", "text"), [
    (1234.5, 2, "1.234,50"), (0, 2, "0,00"), (Decimal("1234567.891"), 3, "1.234.567,891"), (0.125, 2, "0,13"),
    (-5.5, 1, "-5,5"), (None, 2, ""), (999.9994, 3, "999,999"),
])
def test_fmt_br(value: float | Decimal | None, decimals: int, text: str) -> None:
    assert fmt_br(value, decimals) == text


def test_daily_rows_cost_per_posto_and_csv() -> None:
    """30/04 (Thu, working), 01/05 (holiday), 02/05 (Sat): 12 kWh/day. Prices R$ 2,00 ponta, 1,00 intermediário,
    0,50 fora ponta. CEMIG-D windows: working day ponta 3 h = 1,5 kWh, intermediário 2 h = 1,0, fora 9,5 ->
    1,5 x 2 + 1 x 1 + 9,5 x 0,5 = 8,75; holiday and Saturday all fora ponta: 12 x 0,5 = 6,00 each. Total 20,75."""
    prices = {"Ponta": Decimal("2.00"), "Intermediário": Decimal("1.00"), "Fora ponta": Decimal("0.50")}

    def price(day: dt.date, kwh: dict[str, float]) -> Decimal:
        return sum((Decimal(str(kwh[p])) * v for p, v in prices.items()), Decimal(0)).quantize(Decimal("0.01"))

    rep = build_report("casa", "diario", hourly(3), T0, T0 + 72 * H, windows=KNOWN_WINDOWS["CEMIG-D"],
                       price=price, flag_of=lambda d: "Verde" if d.month == 4 else "Amarela")
    assert [(r.period, r.kwh, r.cost_rs, r.flag) for r in rep.rows] == [
        ("2026-04-30", 12.0, Decimal("8.75"), "Verde"), ("2026-05-01", 12.0, Decimal("6.00"), "Amarela"),
        ("2026-05-02", 12.0, Decimal("6.00"), "Amarela")]
    assert rep.total_cost_rs == Decimal("20.75")
    text = to_csv(rep)
    assert text.startswith("\ufeffPeríodo;Início;Fim;Consumo (kWh);")
    lines = text.split("\r\n")
    assert lines[1] == "2026-04-30;30/04/2026;30/04/2026;12,000;;8,75;Verde;não"
    assert lines[4] == "Total;;;36,000;;20,75;;"


def test_monthly_rows_split_at_local_month_and_peak() -> None:
    peaks = [Bucket(start="", start_ms=T0 + 20 * H, end_ms=T0 + 20 * H + 900_000, kwh=1.2)]
    rep = build_report("casa", "mensal", hourly(3), T0, T0 + 72 * H, peaks=peaks)
    assert [(r.period, r.start, r.end, r.kwh, r.peak_kw) for r in rep.rows] == [
        ("2026-04", "2026-04-01", "2026-04-30", 12.0, 4.8), ("2026-05", "2026-05-01", "2026-05-31", 24.0, None)]
    assert rep.total_cost_rs is None


def test_weekly_label_is_iso_week() -> None:
    rep = build_report("casa", "semanal", hourly(3), T0, T0 + 72 * H)
    assert [r.period for r in rep.rows] == ["2026-S18"]
