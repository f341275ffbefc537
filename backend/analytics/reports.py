"""Daily, weekly and monthly summaries as JSON rows and as CSV formatted for Brazilian spreadsheets.

Each row: period, local start/end, kWh, peak demand (kW, 15 min) when known, estimated cost and the bandeira.

One number everywhere (docs/analytics.md, "One rounding rule"): the report's total cost is the energy lines of the
period's bill (billing.estimate_bill: quantity × unit price with taxes, rounded per line), and its total kWh is the
period's energy rounded once to the Wh, as on that bill. The rows share those totals out in proportion to each
row's own cost (each day's energy per posto × that day's price with taxes and bandeira) and energy, to the cent and
to the Wh (billing.apportion), so the printed rows add up to the printed total and the total is the bill's.

A day without any reading (no energy and none spread over a gap) is a gap, not 0 kWh: it takes no share of the
totals, a row made only of such days is ``no_data`` and the CSV leaves its kWh and cost empty ("sem dados").

CSV: ``;`` separator, decimal comma, ``.`` thousands separator, dates ``dd/mm/aaaa``, UTF-8 with BOM (so
Excel in pt-BR opens accents and numbers correctly), CRLF line ends.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import io
import itertools
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from backend.analytics.billing import CENT, WH, apportion, money
from backend.aneel.postos import PostoWindows, split_by_posto
from backend.store.registers import Bucket, bucket_edges
from protocol.timebase import TZ

ReportKind = Literal["diario", "semanal", "mensal"]
KIND_GRANULARITY: Final = {"diario": "day", "semanal": "week", "mensal": "month"}
PriceFn = Callable[[dt.date, dict[str, float]], Decimal | None]
"""(local day, kWh per posto of that day) -> cost of that day in R$, unrounded (None = cannot be priced): the
weight of the day in the period's total."""


class ReportRow(msgspec.Struct):
    period: str
    start: str
    end: str
    kwh: float
    """0 with ``no_data`` when no day of the row has data; the CSV then leaves it empty."""
    peak_kw: float | None = None
    cost_rs: Decimal | None = None
    flag: str | None = None
    estimated: bool = False
    no_data: bool = False
    """No reading in the whole row: a gap, not 0 kWh (the CSV leaves kWh and cost empty, "sem dados")."""


class Report(msgspec.Struct):
    scope: str
    kind: str
    rows: list[ReportRow]
    total_kwh: float
    total_cost_rs: Decimal | None


def _label(kind: ReportKind, day: dt.date) -> str:
    if kind == "diario":
        return day.isoformat()
    if kind == "semanal":
        y, w, _ = day.isocalendar()
        return f"{y}-S{w:02d}"
    return f"{day:%Y-%m}"


def has_data(hours: Sequence[Bucket]) -> bool:
    """A register that moved, or energy spread over a gap: readings exist. A meter measures to the Wh and a
    household always draws something, so a day whose register never moved had no readings at all."""
    return any(x.kwh != 0 or x.estimated for x in hours)


def build_report(
    scope: str,
    kind: ReportKind,
    hourly: Sequence[Bucket],
    start_ms: int,
    end_ms: int,
    *,
    windows: PostoWindows | None = None,
    price: PriceFn | None = None,
    total_cost: Decimal | None = None,
    flag_of: Callable[[dt.date], str | None] | None = None,
    peaks: Sequence[Bucket] = (),
    tz: ZoneInfo = TZ,
) -> Report:
    """Rows of ``kind`` from hourly buckets; ``peaks`` (15-min buckets) give each row's peak demand.

    ``total_cost`` is the period's bill for its energy (shared out over the rows by their ``price``); without it
    the rows' own costs are summed and rounded once."""
    edges = bucket_edges(start_ms, end_ms, KIND_GRANULARITY[kind], tz)  # type: ignore[arg-type]
    rows: list[ReportRow] = []
    energy: list[Decimal | None] = []
    weights: list[Decimal | None] = []
    # Each row's buckets by bisection over the buckets in time order (a month by day is 30 rows over 720 hours and
    # 2 880 quarters: scanning them all for every row cost more than the rest of the report).
    hourly = sorted(hourly, key=lambda x: x.start_ms)
    peaks = sorted(peaks, key=lambda x: x.start_ms)
    hour_starts, peak_starts = [x.start_ms for x in hourly], [x.start_ms for x in peaks]
    for a, b in itertools.pairwise(edges):
        inside = hourly[bisect.bisect_left(hour_starts, a):bisect.bisect_left(hour_starts, b)]
        day0 = dt.datetime.fromtimestamp(a / 1000, tz).date()
        last = dt.datetime.fromtimestamp((b - 1) / 1000, tz).date()
        by_day: dict[dt.date, list[Bucket]] = {}
        for x in inside:
            by_day.setdefault(dt.datetime.fromtimestamp(x.start_ms / 1000, tz).date(), []).append(x)
        days = {d: xs for d, xs in sorted(by_day.items()) if has_data(xs)}
        weight: Decimal | None = None
        if days and price is not None and windows is not None:
            weight = Decimal(0)
            for day, xs in days.items():
                c = price(day, split_by_posto(((x.start_ms, x.end_ms, x.kwh) for x in xs), windows, tz).kwh)
                if c is None:
                    weight = None
                    break
                weight += c
        pk = [x for x in peaks[bisect.bisect_left(peak_starts, a):bisect.bisect_left(peak_starts, b)]
              if not x.estimated]
        energy.append(Decimal(str(sum(x.kwh for xs in days.values() for x in xs))) if days else None)
        weights.append(weight)
        rows.append(ReportRow(period=_label(kind, day0), start=day0.isoformat(), end=last.isoformat(), kwh=0.0,
                              peak_kw=round(max(x.kwh for x in pk) * 4, 3) if pk else None,
                              flag=flag_of(day0) if flag_of else None, estimated=any(x.estimated for x in inside),
                              no_data=not days))
    with_data = [i for i, e in enumerate(energy) if e is not None]
    kwh_total = sum((energy[i] or Decimal(0) for i in with_data), Decimal(0)).quantize(WH, rounding=ROUND_HALF_UP)
    for i, part in zip(with_data, apportion([energy[i] or Decimal(0) for i in with_data], kwh_total, WH),
                       strict=True):
        rows[i].kwh = float(part)
    cost_total: Decimal | None = None
    priced = [weights[i] for i in with_data]
    if with_data and price is not None and all(w is not None for w in priced):
        exact = [w or Decimal(0) for w in priced]
        cost_total = total_cost if total_cost is not None else money(sum(exact, Decimal(0)))
        for i, part in zip(with_data, apportion(exact, cost_total, CENT), strict=True):
            rows[i].cost_rs = part
    return Report(scope=scope, kind=kind, rows=rows, total_kwh=float(kwh_total), total_cost_rs=cost_total)


def fmt_br(value: float | Decimal | None, decimals: int = 2) -> str:
    """``1234.5`` -> ``"1.234,50"`` (pt-BR); None -> empty."""
    if value is None:
        return ""
    q = Decimal(str(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    text = f"{q:,.{decimals}f}"  # 1,234.50
    return text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")


def date_br(iso: str) -> str:
    d = dt.date.fromisoformat(iso)
    return f"{d:%d/%m/%Y}"


HEADER: Final = ["Período", "Início", "Fim", "Consumo (kWh)", "Demanda máxima (kW)", "Custo estimado (R$)",
                 "Bandeira", "Estimado (lacuna)"]


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(HEADER)
    for r in report.rows:
        w.writerow([r.period, date_br(r.start), date_br(r.end), "" if r.no_data else fmt_br(r.kwh, 3),
                    fmt_br(r.peak_kw, 3),
                    fmt_br(r.cost_rs, 2), r.flag or "",
                    "sem dados" if r.no_data else "sim" if r.estimated else "não"])
    w.writerow(["Total", "", "", fmt_br(report.total_kwh, 3), "", fmt_br(report.total_cost_rs, 2), "", ""])
    return "\ufeff" + buf.getvalue()
