"""One number everywhere: the report (JSON and CSV), the bill and the Tarifa Branca comparison of the same period
agree to the cent and to the Wh (docs/analytics.md, "One rounding rule").

The load is deliberately awkward: every hour a different kWh with many decimals, a day without data in the middle,
a cycle that crosses a bandeira change (Light, 16/04-15/05/2026: April Verde, May Amarela) and two holidays, taxes
that make every unit price a long fraction. Before the
rule, the CSV summed each day's rounded cost and each row's rounded kWh and missed the bill by cents and Wh.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal as D

import pytest

from backend.analytics.billing import apportion, energy_cost, estimate_bill, unit_prices
from backend.analytics.reports import ReportKind, build_report, to_csv
from backend.aneel.postos import split_by_posto
from backend.aneel.sites import parse_sites
from backend.store.registers import Bucket
from tests.analytics.test_billing_month import books

TZ_OFFSET = dt.timezone(dt.timedelta(hours=-3))
H = 3_600_000
SITES = parse_sites("""
[[site]]
id = "rio"
distributor = "LIGHT SESA"
modality = "Convencional"
icms = "0.18"
pis = "0.0110"
cofins = "0.0507"
billing_day = 15
""")
NO_DATA_DAY = dt.date(2026, 4, 30)


def load(start: dt.date, days: int) -> list[Bucket]:
    """Hourly kWh with many decimals; nothing at all on NO_DATA_DAY (the meters were off)."""
    t0 = int(dt.datetime(start.year, start.month, start.day, tzinfo=TZ_OFFSET).timestamp() * 1000)
    out = []
    for i in range(24 * days):
        day = start + dt.timedelta(days=i // 24)
        kwh = 0.0 if day == NO_DATA_DAY else 0.137 + ((i * 7919) % 1000) / 1731 + (0.9 if i % 24 in (19, 20) else 0)
        out.append(Bucket(start="", start_ms=t0 + i * H, end_ms=t0 + (i + 1) * H, kwh=kwh))
    return out


def cents(text: str) -> D:
    return D(text.replace(".", "").replace(",", "."))


@pytest.mark.parametrize("kind", ["diario", "semanal", "mensal"])
def test_report_bill_and_comparison_agree_to_the_cent_and_the_wh(kind: ReportKind) -> None:
    site = SITES["rio"]
    tariffs, flags = books()
    start, end = site.cycle_for(dt.date(2026, 5, 2))
    hourly = load(start, (end - start).days + 1)
    t0, t1 = hourly[0].start_ms, hourly[-1].end_ms
    windows = site.windows(tariffs.resolve_cnpj(site.distributor))
    split = split_by_posto(((b.start_ms, b.end_ms, b.kwh) for b in hourly), windows)

    bill = estimate_bill(site, start, end, split.kwh, tariffs, flags)  # what ``custo`` prints
    conv = estimate_bill(site, start, end, split.kwh, tariffs, flags, modality="Convencional")  # the comparison
    branca = estimate_bill(site, start, end, split.kwh, tariffs, flags, modality="Branca")
    assert [ln.kind for ln in bill.lines] == ["tusd", "te", "bandeira", "bandeira"]

    def price(day: dt.date, kwh: dict[str, float]) -> D:  # as the service prices a day: unrounded
        return D(str(sum(kwh.values()))) * unit_prices(site, day, tariffs, flags)["Não se aplica"]

    report = build_report("rio", kind, hourly, t0, t1, windows=windows, price=price, total_cost=energy_cost(bill))

    # The bill: the total is the sum of its printed lines, and the ICMS line's base is that total.
    assert bill.total == sum(ln.amount for ln in bill.lines) == conv.total
    assert bill.taxes[0].base == bill.total
    # Report JSON: the total is the bill's; the rows add up to it.
    assert report.total_cost_rs == bill.total
    assert sum(r.cost_rs or D(0) for r in report.rows) == bill.total
    assert D(str(report.total_kwh)) == bill.kwh_total == conv.kwh_total == branca.kwh_total
    assert sum(D(str(r.kwh)) for r in report.rows) == bill.kwh_total
    # The CSV prints the same numbers, and its rows add up to its total row.
    rows = list(csv.reader(io.StringIO(to_csv(report).removeprefix("\ufeff")), delimiter=";"))
    body, total = rows[1:-1], rows[-1]
    assert cents(total[5]) == bill.total and cents(total[3]) == bill.kwh_total
    assert sum(cents(r[5]) for r in body if r[5]) == bill.total
    assert sum(cents(r[3]) for r in body if r[3]) == bill.kwh_total
    if kind == "diario":  # the day without data is a gap, not 0 kWh
        gap = next(r for r in body if r[1] == f"{NO_DATA_DAY:%d/%m/%Y}")
        assert (gap[3], gap[5], gap[7]) == ("", "", "sem dados")
        assert sum(r[7] == "sem dados" for r in body) == 1


def test_apportion_keeps_the_total_and_each_part_within_a_quantum_of_its_share() -> None:
    parts = apportion([D(1), D(1), D(1)], D("1.00"), D("0.01"))
    assert parts == [D("0.34"), D("0.33"), D("0.33")]
    weights = [D("8.754"), D("6.0049"), D("6.0049"), D(0)]
    parts = apportion(weights, D("20.77"), D("0.01"))
    assert sum(parts) == D("20.77") and parts[-1] == 0
    assert all(abs(p - D("20.77") * w / sum(weights)) < D("0.01") for p, w in zip(parts, weights, strict=True))
    assert apportion([], D(0), D("0.01")) == []
