"""Daily, weekly and monthly summaries as JSON rows and as CSV formatted for Brazilian spreadsheets.

Each row: period, local start/end, kWh, peak demand (kW, 15 min) when known, estimated cost and the bandeira.
The cost of a row is the sum over its days of each day's energy per posto × that day's price with taxes
(billing.unit_prices: tariff in force + that month's bandeira, grossed up by ICMS/PIS/COFINS) — an estimate; the
cycle bill (``custo``) is the line-by-line figure.

CSV: ``;`` separator, decimal comma, ``.`` thousands separator, dates ``dd/mm/aaaa``, UTF-8 with BOM (so
Excel in pt-BR opens accents and numbers correctly), CRLF line ends.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from backend.aneel.postos import PostoWindows, split_by_posto
from backend.store.registers import Bucket, bucket_edges
from protocol.timebase import TZ

ReportKind = Literal["diario", "semanal", "mensal"]
KIND_GRANULARITY: Final = {"diario": "day", "semanal": "week", "mensal": "month"}
PriceFn = Callable[[dt.date, dict[str, float]], Decimal | None]
"""(local day, kWh per posto of that day) -> cost of that day in R$ (None = cannot be priced)."""


class ReportRow(msgspec.Struct):
    period: str
    start: str
    end: str
    kwh: float
    peak_kw: float | None = None
    cost_rs: Decimal | None = None
    flag: str | None = None
    estimated: bool = False


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


def build_report(
    scope: str,
    kind: ReportKind,
    hourly: Sequence[Bucket],
    start_ms: int,
    end_ms: int,
    *,
    windows: PostoWindows | None = None,
    price: PriceFn | None = None,
    flag_of: Callable[[dt.date], str | None] | None = None,
    peaks: Sequence[Bucket] = (),
    tz: ZoneInfo = TZ,
) -> Report:
    """Rows of ``kind`` from hourly buckets; ``peaks`` (15-min buckets) give each row's peak demand."""
    edges = bucket_edges(start_ms, end_ms, KIND_GRANULARITY[kind], tz)  # type: ignore[arg-type]
    rows: list[ReportRow] = []
    for a, b in itertools.pairwise(edges):
        inside = [x for x in hourly if a <= x.start_ms < b]
        day0 = dt.datetime.fromtimestamp(a / 1000, tz).date()
        last = dt.datetime.fromtimestamp((b - 1) / 1000, tz).date()
        kwh = sum(x.kwh for x in inside)
        cost: Decimal | None = None
        if price is not None and windows is not None:
            by_day: dict[dt.date, list[Bucket]] = {}
            for x in inside:
                by_day.setdefault(dt.datetime.fromtimestamp(x.start_ms / 1000, tz).date(), []).append(x)
            total = Decimal(0)
            for day, xs in sorted(by_day.items()):
                split = split_by_posto(((x.start_ms, x.end_ms, x.kwh) for x in xs), windows, tz)
                c = price(day, split.kwh)
                if c is None:
                    total = Decimal(-1)
                    break
                total += c
            cost = total if total >= 0 else None
        pk = [x for x in peaks if a <= x.start_ms < b and not x.estimated]
        peak = round(max(x.kwh for x in pk) * 4, 3) if pk else None
        rows.append(ReportRow(period=_label(kind, day0), start=day0.isoformat(), end=last.isoformat(),
                              kwh=round(kwh, 3), peak_kw=peak, cost_rs=cost,
                              flag=flag_of(day0) if flag_of else None, estimated=any(x.estimated for x in inside)))
    costs = [r.cost_rs for r in rows]
    return Report(scope=scope, kind=kind, rows=rows, total_kwh=round(sum(r.kwh for r in rows), 3),
                  total_cost_rs=sum((c for c in costs if c is not None), Decimal(0))
                  if costs and all(c is not None for c in costs) else None)


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
        w.writerow([r.period, date_br(r.start), date_br(r.end), fmt_br(r.kwh, 3), fmt_br(r.peak_kw, 3),
                    fmt_br(r.cost_rs, 2), r.flag or "", "sim" if r.estimated else "não"])
    w.writerow(["Total", "", "", fmt_br(report.total_kwh, 3), "", fmt_br(report.total_cost_rs, 2), "", ""])
    return "\ufeff" + buf.getvalue()
