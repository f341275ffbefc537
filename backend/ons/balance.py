"""The energy balance as people read it: buckets of generation by source, load, interchange and renewable share
(sans-IO: numbers in, typed answers out; :mod:`backend.ons.grid` does the querying).

Units: each stored value is ONS's MWmed over one hour, which is the MWh of that hour. A bucket of a day or a month
is the sum of its hours (MWh); the "now" view shows the latest hour, where MWmed and MWh are the same number.

Renewable share = (hydro + wind + solar) / (hydro + thermal + wind + solar) of the subsystem's own generation.
Thermal includes nuclear and biomass (ONS does not split them in this dataset), so biomass counts as
non-renewable here; imports are not attributed to any source (docs/ons.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Final, Literal

import msgspec

from backend.ons.datasets import BALANCE_FIELDS, GENERATION, RENEWABLE
from protocol.timebase import TZ

Granularity = Literal["hora", "dia", "mes"]
GRANULARITIES: Final[tuple[Granularity, ...]] = ("hora", "dia", "mes")


class BalanceBucket(msgspec.Struct, frozen=True):
    inicio: str
    """Local start (ISO 8601 with offset)."""
    inicio_ms: int
    hidraulica: float | None
    termica: float | None
    eolica: float | None
    solar: float | None
    geracao_total: float | None
    carga: float | None
    intercambio: float | None
    """Net export (> 0) or import (< 0) of the subsystem; for SIN, the international exchange."""
    renovavel_pct: float | None
    horas: int
    """Hours with data in the bucket."""


class NowSubsystem(msgspec.Struct, frozen=True):
    subsistema: str
    nome: str
    hora: str
    """Local start of the latest hour with data."""
    hora_ms: int
    geracao: dict[str, float]
    """MWmed by source (hidraulica, termica, eolica, solar)."""
    geracao_total: float
    carga: float | None
    intercambio: float | None
    renovavel_pct: float | None


def local_iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, TZ).isoformat()


def renewable_pct(values: Mapping[str, float]) -> float | None:
    """Share (0-100) of hydro + wind + solar in the generation of ``values``; None without generation."""
    total = sum(values.get(s, 0.0) for s in GENERATION)
    if total <= 0:
        return None
    return round(100.0 * sum(values.get(s, 0.0) for s in RENEWABLE) / total, 2)


def bucket(start_ms: int, values: Mapping[str, float], hours: int) -> BalanceBucket:
    gen = [values[s] for s in GENERATION if s in values]

    def r(name: str) -> float | None:
        return round(values[name], 3) if name in values else None

    return BalanceBucket(inicio=local_iso(start_ms), inicio_ms=start_ms, hidraulica=r("hidraulica"),
                         termica=r("termica"), eolica=r("eolica"), solar=r("solar"),
                         geracao_total=round(sum(gen), 3) if gen else None, carga=r("carga"),
                         intercambio=r("intercambio"), renovavel_pct=renewable_pct(values), horas=hours)


def month_start_ms(ms: int) -> int:
    local = dt.datetime.fromtimestamp(ms / 1000, TZ)
    return int(dt.datetime(local.year, local.month, 1, tzinfo=TZ).timestamp() * 1000)


def buckets(points: Iterable[tuple[int, str, float, int]], granularity: Granularity) -> list[BalanceBucket]:
    """``(start_ms, source, mwh, hours)`` points (hours or local days, as queried) into buckets of
    ``granularity``; days are folded into local calendar months for ``mes``."""
    sums: dict[int, dict[str, float]] = {}
    hours: dict[int, dict[str, int]] = {}
    for start, source, value, n in points:
        key = month_start_ms(start) if granularity == "mes" else start
        per = sums.setdefault(key, {})
        per[source] = per.get(source, 0.0) + value
        counted = hours.setdefault(key, {})
        counted[source] = counted.get(source, 0) + n
    return [bucket(k, sums[k], max(hours[k].values())) for k in sorted(sums)]


def totals(items: list[BalanceBucket]) -> dict[str, float | None]:
    """Sums over the buckets (MWh) and the renewable share of the period."""
    out: dict[str, float | None] = {}
    for name in (*BALANCE_FIELDS, "geracao_total"):
        present = [v for b in items if (v := getattr(b, name)) is not None]
        out[name] = round(sum(present), 3) if present else None
    out["renovavel_pct"] = renewable_pct({k: v for k, v in out.items() if v is not None})
    return out


def now_view(code: str, name: str, hour_ms: int, values: Mapping[str, float]) -> NowSubsystem:
    gen = {s: round(values[s], 3) for s in GENERATION if s in values}
    return NowSubsystem(subsistema=code, nome=name, hora=local_iso(hour_ms), hora_ms=hour_ms, geracao=gen,
                        geracao_total=round(sum(gen.values()), 3),
                        carga=round(values["carga"], 3) if "carga" in values else None,
                        intercambio=round(values["intercambio"], 3) if "intercambio" in values else None,
                        renovavel_pct=renewable_pct(values))
