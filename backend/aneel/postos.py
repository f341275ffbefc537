"""Tarifa Branca postos: which hours are ponta, intermediário or fora ponta, per distributor.

On working days the distributor's REH defines a 3-hour *ponta* and an *intermediário* hour before and after it;
every other hour is *fora ponta*. Weekends and national holidays are fora ponta all day. Windows are half-open
``[start, end)`` in local time (America/Sao_Paulo). National holidays come from the ``holidays`` library
(Brazil, public category: includes Good Friday and, since 2024, 20 November; Carnival and Corpus Christi are
optional days there and are *not* treated as holidays).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Final, Literal
from zoneinfo import ZoneInfo

import holidays
import msgspec

Posto = Literal["Ponta", "Intermediário", "Fora ponta"]
POSTOS: Final[tuple[Posto, ...]] = ("Ponta", "Intermediário", "Fora ponta")
SLICE_MINUTES: Final = 15
TZ: Final = ZoneInfo("America/Sao_Paulo")


class PostoWindows(msgspec.Struct, frozen=True):
    """Ponta and intermediário windows as ``"HH:MM"`` pairs, half-open, local time."""

    ponta: tuple[str, str]
    intermediario: list[tuple[str, str]]
    source: str = ""


def _minute_of(hhmm: str) -> int:
    h, mm = hhmm.split(":")
    return int(h) * 60 + int(mm)


def _w(p: tuple[str, str], i: list[tuple[str, str]], src: str) -> PostoWindows:
    return PostoWindows(ponta=p, intermediario=i, source=src)


# Known windows (ANEEL resolutions per distributor; docs/analytics.md), by CNPJ and by sigla. A site may override them.
KNOWN_WINDOWS: Final[dict[str, PostoWindows]] = {
    "CEMIG-D": _w(("17:00", "20:00"), [("16:00", "17:00"), ("20:00", "21:00")], "portalamirt.com.br"),
    "ELETROPAULO": _w(("17:30", "20:30"), [("16:30", "17:30"), ("20:30", "21:30")], "blog.clarke.com.br"),
    "CPFL-PAULISTA": _w(("18:00", "21:00"), [("16:00", "18:00"), ("21:00", "22:00")], "ceinmart"),
    "CPFL-PIRATINING": _w(("18:00", "21:00"), [("17:00", "18:00"), ("21:00", "22:00")], "ceinmart"),
    "CELESC": _w(("18:30", "21:30"), [("17:30", "18:30"), ("21:30", "22:30")], "ceinmart"),
    "LIGHT SESA": _w(("17:30", "20:30"), [("16:30", "17:30"), ("20:30", "21:30")], "REH 3.014/2022 (regra geral)"),
}
KNOWN_WINDOWS["06981180000116"] = KNOWN_WINDOWS["CEMIG-D"]
KNOWN_WINDOWS["61695227000193"] = KNOWN_WINDOWS["ELETROPAULO"]
KNOWN_WINDOWS["60444437000146"] = KNOWN_WINDOWS["LIGHT SESA"]


def windows_for(distributor: str, cnpj: str = "") -> PostoWindows:
    """The distributor's windows (by CNPJ first, then sigla); unknown distributors must be configured."""
    for key in (cnpj, distributor, distributor.upper()):
        if key and key in KNOWN_WINDOWS:
            return KNOWN_WINDOWS[key]
    raise KeyError(f"horário de ponta desconhecido para {distributor or cnpj}: configure 'ponta' no site")


@lru_cache(maxsize=64)
def _holidays(year: int) -> dict[dt.date, str]:
    return dict(holidays.country_holidays("BR", years=year, language="pt_BR").items())


def holiday_name(day: dt.date) -> str | None:
    """The national holiday on ``day`` (pt-BR name) or None."""
    return _holidays(day.year).get(day)


def is_working_day(day: dt.date) -> bool:
    return day.weekday() < 5 and holiday_name(day) is None


def posto_at(local: dt.datetime, windows: PostoWindows) -> Posto:
    """The posto of a local wall-clock instant."""
    if not is_working_day(local.date()):
        return "Fora ponta"
    return working_day_postos(windows)[local.hour * 60 + local.minute]


def working_day_postos(windows: PostoWindows) -> tuple[Posto, ...]:
    """The posto of each minute (0-1439) of a working day under ``windows``.

    A month of hourly buckets is ~3 000 slices, each of which used to parse the ``"HH:MM"`` windows again (half of
    a bill's time in Python); the table is built once per distinct set of windows."""
    return _minute_table(tuple(windows.ponta), tuple(tuple(w) for w in windows.intermediario))


@lru_cache(maxsize=64)
def _minute_table(ponta: tuple[str, ...], inter: tuple[tuple[str, ...], ...]) -> tuple[Posto, ...]:
    p0, p1 = _minute_of(ponta[0]), _minute_of(ponta[1])
    spans = [(_minute_of(a), _minute_of(b)) for a, b in inter]

    def at(minute: int) -> Posto:
        if p0 <= minute < p1:
            return "Ponta"
        if any(a <= minute < b for a, b in spans):
            return "Intermediário"
        return "Fora ponta"

    return tuple(at(m) for m in range(24 * 60))


class PostoSplit(msgspec.Struct):
    """Energy per posto and per local hour-of-day/posto (to show which hours drive a difference)."""

    kwh: dict[str, float]
    by_hour: dict[int, dict[str, float]]
    slices: int


def _slices(start_ms: int, end_ms: int) -> Iterator[int]:
    step = SLICE_MINUTES * 60_000
    t = start_ms
    while t < end_ms:
        yield t
        t += step


def split_by_posto(
    buckets: Iterable[tuple[int, int, float]], windows: PostoWindows, tz: ZoneInfo = TZ
) -> PostoSplit:
    """Distribute bucket energy ``(start_ms, end_ms, kwh)`` over postos in 15-minute slices.

    A bucket longer than 15 min (an hour) is spread evenly over its slices, so a window starting at :30 still
    gets its share; buckets should therefore be 15 min or 1 h long.
    """
    kwh: dict[str, float] = {p: 0.0 for p in POSTOS}
    by_hour: dict[int, dict[str, float]] = {}
    n = 0
    table = working_day_postos(windows)
    working: dict[dt.date, bool] = {}
    for start_ms, end_ms, energy in buckets:
        slices = list(_slices(start_ms, end_ms))
        if not slices:
            continue
        share = energy / len(slices)
        first = dt.datetime.fromtimestamp(start_ms / 1000, tz)
        last = dt.datetime.fromtimestamp(slices[-1] / 1000, tz) if len(slices) > 1 else first
        m0, day = first.hour * 60 + first.minute, first.date()
        # An hour's slices are its start's wall clock plus 15, 30 and 45 minutes, unless the bucket crosses a
        # change of UTC offset (DST) or midnight: then each slice's own clock (the time zone conversion is the
        # costly part of a month's ~3 000 slices).
        steady = last.utcoffset() == first.utcoffset() and last.date() == day
        for k, t in enumerate(slices):
            if steady:
                minute = m0 + k * SLICE_MINUTES
            else:
                local = dt.datetime.fromtimestamp(t / 1000, tz)
                minute, day = local.hour * 60 + local.minute, local.date()
            if day not in working:
                working[day] = is_working_day(day)
            posto = table[minute] if working[day] else "Fora ponta"
            kwh[posto] += share
            hour = by_hour.get(minute // 60)
            if hour is None:
                hour = by_hour[minute // 60] = {p: 0.0 for p in POSTOS}
            hour[posto] += share
            n += 1
    return PostoSplit(kwh=kwh, by_hour=by_hour, slices=n)
