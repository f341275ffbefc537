"""Periods said in Portuguese -> spans of local dates, relative to a clock passed in.

Two layers. The *span* grammar is ours, because no library has it: which words make a range ("de 1 a 15 de
maio", "entre 10/04 e 20/04"), an open range ("desde março"), a count ("nos últimos 7 dias", "nos próximos
dias") or a single calendar unit ("ontem", "semana passada", "em março"). Every *date* inside is resolved by
``dateparser`` in Portuguese with the clock as its relative base: month and weekday names, "ontem",
"anteontem", "semana passada", "há 3 dias", "15/05", "16 de abril de 2026". dateparser also says whether an
expression names a day, a week, a month or a year, and a single expression covers that whole unit (weeks run
Monday to Sunday, as in the analytics).

Dates in the past are preferred ("em dezembro" in May is last December) unless the question looks ahead
(``future=True``: "quanto vou gastar na sexta"). The first expression found wins; a question with two periods
("maio comparado com abril") gets the first one only. Nothing here reads the clock: ``now`` is an argument.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Final

from dateparser.date import DateDataParser

from backend.questions.interpretation import Periodo, TipoPeriodo
from backend.questions.lexicon import MONTHS

M: Final = "(?:" + "|".join(MONTHS) + ")"
NUMDATE: Final = r"(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}(?:/\d{2,4})?)"
WEEKDAY: Final = r"(?:segunda|terca|quarta|quinta|sexta|sabado|domingo)"
_TO: Final = r"(?:a|ao dia|ao|ate o dia|ate|e o dia|e)"
_FROM: Final = r"(?:(?:de|do dia|entre o dia|entre os dias|entre|desde o dia|dia) )?"


class Clock:
    """``now`` in Brasília time and the dateparser settings that resolve dates against it."""

    def __init__(self, now: dt.datetime, *, future: bool) -> None:
        self.today = now.date()
        self.future = future
        base = now.replace(tzinfo=None)
        self._parser = DateDataParser(languages=["pt"], settings={
            "RELATIVE_BASE": base, "PREFER_DATES_FROM": "future" if future else "past", "DATE_ORDER": "DMY"})

    def resolve(self, expr: str) -> tuple[dt.date, str] | None:
        """One date expression -> (date, "day" | "week" | "month" | "year"), or None if it is no date."""
        data = self._parser.get_date_data(expr)
        if data.date_obj is None:
            return None
        return data.date_obj.date(), data.period or "day"

    def day(self, expr: str) -> dt.date | None:
        found = self.resolve(expr)
        return found[0] if found else None


def unit_span(day: dt.date, unit: str) -> tuple[dt.date, dt.date]:
    """The calendar day, week (Monday–Sunday), month or year containing ``day``."""
    if unit == "week":
        start = day - dt.timedelta(days=day.weekday())
        return start, start + dt.timedelta(days=6)
    if unit == "month":
        return day.replace(day=1), month_end(day)
    if unit == "year":
        return day.replace(month=1, day=1), day.replace(month=12, day=31)
    return day, day


def month_end(day: dt.date) -> dt.date:
    return (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)


_UNIT_TYPE: Final[dict[str, TipoPeriodo]] = {"day": "dia", "week": "semana", "month": "mes", "year": "ano"}
Span = tuple[dt.date, dt.date, TipoPeriodo] | None
Rule = tuple[re.Pattern[str], Callable[[re.Match[str], Clock], Span]]


def _single(expr: str, c: Clock) -> Span:
    found = c.resolve(expr)
    if found is None:
        return None
    start, end = unit_span(*found)
    return start, end, _UNIT_TYPE.get(found[1], "dia")


def _with_year(expr: str, year: str | None) -> str:
    return f"{expr} de {year}" if year else expr


def _range_days_month(m: re.Match[str], c: Clock) -> Span:
    end = c.day(_with_year(f"{m['b']} de {m['mb']}", m["y"]))
    if end is None:
        return None
    start = c.day(f"{m['a']} de {m['ma'] or m['mb']} de {end.year}")
    if start is None:
        return None
    if start > end:
        start = start.replace(year=start.year - 1)
    return start, end, "intervalo"


def _range_numdates(m: re.Match[str], c: Clock) -> Span:
    start, end = c.day(m["a"]), c.day(m["b"])
    if start is None or end is None:
        return None
    if start > end and m["a"].count("/") == 1:  # "de 20/12 a 10/01": the year turned in between
        start = start.replace(year=end.year - 1)
    return (start, end, "intervalo") if start <= end else None


def _range_days(m: re.Match[str], c: Clock) -> Span:
    a, b = int(m["a"]), int(m["b"])
    ref = c.today if c.future or b <= c.today.day else c.today.replace(day=1) - dt.timedelta(days=1)
    try:
        start, end = ref.replace(day=a), ref.replace(day=b)
    except ValueError:
        return None
    return (start, end, "intervalo") if start <= end else None


def _range_months(m: re.Match[str], c: Clock) -> Span:
    first = c.day(_with_year(m["ma"], m["ya"]))
    last = c.day(_with_year(m["mb"], m["yb"] or m["ya"]))
    if first is None or last is None:
        return None
    if first > last:
        first = first.replace(year=first.year - 1)
    return first.replace(day=1), month_end(last), "intervalo"


def _since(m: re.Match[str], c: Clock) -> Span:
    x = m["x"]
    if x in ("inicio do mes", "comeco do mes"):
        start: dt.date | None = c.today.replace(day=1)
    elif x in ("inicio do ano", "comeco do ano"):
        start = c.today.replace(month=1, day=1)
    elif x.isdigit():
        ref = c.today if int(x) <= c.today.day else c.today.replace(day=1) - dt.timedelta(days=1)
        try:
            start = ref.replace(day=int(x))
        except ValueError:
            start = None
    else:
        found = c.resolve(x)
        start = unit_span(*found)[0] if found else None
    return (start, c.today, "intervalo") if start is not None and start <= c.today else None


_DAYS_IN: Final = {"dia": 1, "dias": 1, "semana": 7, "semanas": 7}


def _last_n(m: re.Match[str], c: Clock) -> Span:
    n = int(m["n"] or (7 if m["u"] == "dias" else 1))
    if n == 0:
        return None
    unit = m["u"]
    if unit in _DAYS_IN:
        start = c.today - dt.timedelta(days=n * _DAYS_IN[unit] - 1)
    else:
        back = c.day(f"ha {n} {'meses' if unit.startswith('mes') else 'anos'}")
        if back is None:
            return None
        start = back + dt.timedelta(days=1)
    return start, c.today, "ultimos"


def _next_n(m: re.Match[str], c: Clock) -> Span:
    n = int(m["n"] or (7 if m["u"] == "dias" else 1))
    days = n * _DAYS_IN.get(m["u"], 30)
    return c.today, c.today + dt.timedelta(days=max(days, 1) - 1), "proximos"


def _next_week(m: re.Match[str], c: Clock) -> Span:
    start = c.today + dt.timedelta(days=7 - c.today.weekday())
    return start, start + dt.timedelta(days=6), "semana"


def _next_month(m: re.Match[str], c: Clock) -> Span:
    first = month_end(c.today) + dt.timedelta(days=1)
    return first, month_end(first), "mes"


def _rest_of_month(m: re.Match[str], c: Clock) -> Span:
    return c.today, month_end(c.today), "proximos"


def _weekend(m: re.Match[str], c: Clock) -> Span:
    wd = c.today.weekday()
    if wd >= 5:  # on a weekend: this one
        sat = c.today - dt.timedelta(days=wd - 5)
        return sat, sat + dt.timedelta(days=1), "intervalo"
    sat = c.today - dt.timedelta(days=wd + 2)
    return sat, sat + dt.timedelta(days=1), "intervalo"


def _tomorrow(m: re.Match[str], c: Clock) -> Span:
    day = c.today + dt.timedelta(days=2 if m[0].startswith("depois") else 1)
    return day, day, "dia"


_THIS: Final = {"semana": "esta semana", "mes": "este mes", "ano": "este ano"}
_LAST: Final = {"semana": "semana passada", "mes": "mes passado", "ano": "ano passado"}
_BEFORE_LAST: Final = {"semana": "ha 2 semanas", "mes": "ha 2 meses", "ano": "ha 2 anos"}


def _canonical(table: dict[str, str]) -> Callable[[re.Match[str], Clock], Span]:
    return lambda m, c: _single(table[m["u"]], c)


def _ago(m: re.Match[str], c: Clock) -> Span:
    n, unit = m["n"] or m["n2"], m["u"] or m["u2"]
    unit = {"dia": "dias", "semana": "semanas", "mes": "meses", "ano": "anos"}.get(unit, unit)
    return _single(f"ha {n} {unit}", c)


def _weekday(m: re.Match[str], c: Clock) -> Span:
    return _single(m["wd"], c)


def _day_of_month(m: re.Match[str], c: Clock) -> Span:
    if m["m"]:
        return _single(_with_year(f"{m['d']} de {m['m']}", m["y"]), c)
    d = int(m["d"])
    ref = c.today if c.future or d <= c.today.day else c.today.replace(day=1) - dt.timedelta(days=1)
    try:
        day = ref.replace(day=d)
    except ValueError:
        return None
    return day, day, "dia"


def _month(m: re.Match[str], c: Clock) -> Span:
    year = m["y"] or (str(c.today.year - 1) if m["last_year"] else None)
    if not year and m["m"] == MONTHS[c.today.month - 1]:  # the current month, whichever way the question looks
        year = str(c.today.year)
    return _single(_with_year(m["m"], year), c)


def _year(m: re.Match[str], c: Clock) -> Span:
    return _single(m["y"], c)


def _now(m: re.Match[str], c: Clock) -> Span:
    return c.today, c.today, "agora"


def _rules() -> list[Rule]:
    def r(pattern: str) -> re.Pattern[str]:
        return re.compile(r"\b" + pattern + r"\b")

    return [
        (r(_FROM + rf"(?P<a>\d{{1,2}})(?: de (?P<ma>{M}))? {_TO} (?:dia )?(?P<b>\d{{1,2}}) de (?P<mb>{M})"
           r"(?: de (?P<y>\d{4}))?"), _range_days_month),
        (r(_FROM + rf"(?P<a>{NUMDATE}) {_TO} (?:dia )?(?P<b>{NUMDATE})"), _range_numdates),
        (r(_FROM + rf"(?P<a>\d{{1,2}}) {_TO} (?:dia )?(?P<b>\d{{1,2}})(?! (?:de|dias?|semanas?|mes|meses|anos?)\b)"),
         _range_days),
        (r(rf"(?:de|entre|desde) (?P<ma>{M})(?: de (?P<ya>\d{{4}}))? (?:a|ate|e) (?P<mb>{M})(?: de (?P<yb>\d{{4}}))?"),
         _range_months),
        (r(r"(?:(?:de|desde|a partir de|do dia) )?(?:o )?(?:dia )?"
           rf"(?P<x>{NUMDATE}|\d{{1,2}} de {M}(?: de \d{{4}})?|{M}(?: de \d{{4}})?|\d{{1,2}})"
           r" ate (?:hoje|agora|o momento)"),
         _since),
        (r(r"(?:desde|a partir)(?: de| do| da)?(?: o| a)?(?: dia)? "
           rf"(?P<x>inicio do mes|comeco do mes|inicio do ano|comeco do ano|{NUMDATE}|\d{{1,2}} de {M}(?: de \d{{4}})?"
           rf"|{M}(?: de \d{{4}})?|\d{{1,2}})"), _since),
        (r(r"(?:n[oa]s? )?ultim[oa]s? (?:(?P<n>\d{1,3}) )?(?P<u>dias|dia|semanas|semana|meses|mes|anos|ano)"),
         _last_n),
        (r(r"(?:n?[ao]s? )?(?:proxima semana|semana que vem)"), _next_week),
        (r(r"(?:n[oa]s? |para os |para as )?proxim[oa]s? (?:(?P<n>\d{1,3}) )?(?P<u>dias|semanas)"), _next_n),
        (r(r"(?:n?o |para o )?(?:proximo mes|mes que vem)"), _next_month),
        (r(r"(?:ate o (?:fim|final) do mes|(?:n?o |para o )?(?:resto|restante) do mes"
           r"|(?:n?o |para o )?(?:fim|final) do mes)"),
         _rest_of_month),
        (r(r"(?:n?o )?(?:fim|final) de semana(?: passado)?"), _weekend),
        (r(r"(?:depois de )?amanha"), _tomorrow),
        (r(r"anteontem"), lambda m, c: _single("anteontem", c)),
        (r(r"ontem"), lambda m, c: _single("ontem", c)),
        (r(r"hoje"), lambda m, c: _single("hoje", c)),
        (r(rf"(?:em |n?o mes de |d[eo] |para )?(?P<m>{M})(?P<last_year> do ano passado)(?P<y>)"), _month),
        (r(r"(?:n?[ea]st[ea]|n?ess[ea]|d[ea]st[ea]|d[ea]ss[ea]) (?P<u>semana|mes|ano)"), _canonical(_THIS)),
        (r(r"(?:n?[ao] |d[ao] )?(?P<u>semana|mes|ano) (?:atual|corrente)"), _canonical(_THIS)),
        (r(r"(?:n?[ao] |d[ao] )?(?P<u>semana|mes|ano) (?:passad[oa]|anterior)"), _canonical(_LAST)),
        (r(r"(?:n?[ao] |d[ao] )?(?P<u>semana|mes|ano) retrasad[oa]"), _canonical(_BEFORE_LAST)),
        (r(r"(?:ha )?(?P<n>\d{1,3}) (?P<u>dias?|semanas?|meses|mes|anos?) atras"
           r"|ha (?P<n2>\d{1,3}) (?P<u2>dias?|semanas?|meses|mes|anos?)"), _ago),
        (r(rf"(?:n[ao] |d[ao] )?(?:ultim[oa] )?(?P<wd>{WEEKDAY})(?: feira)?(?: passad[oa])?"), _weekday),
        (r(rf"(?:n?o )?dia (?P<d>\d{{1,2}})(?: de (?P<m>{M})(?: de (?P<y>\d{{4}}))?)?"), _day_of_month),
        (r(rf"(?:em |n?o dia |d?o dia )?(?P<x>\d{{1,2}} de {M}(?: de \d{{4}})?|{NUMDATE})"),
         lambda m, c: _single(m["x"], c)),
        (r(rf"(?:em |n?o mes de |d[eo] |para )?(?P<m>{M})(?: (?:de|do ano de) (?P<y>\d{{4}})"
           r"|(?P<last_year> do ano passado)| passado)?"), _month),
        (r(r"(?:em |n?o ano de |de |d?o ano )(?P<y>20\d\d)"), _year),
        (r(r"(?:d|n|pr|para )?o (?P<u>mes|ano)(?! (?:passado|retrasado|que vem|de|anterior)\b)"), _canonical(_THIS)),
        (r(r"(?:agora|atualmente|neste momento|no momento|em tempo real)"), _now),
    ]


RULES: Final = _rules()


def find_period(text: str, now: dt.datetime, *, future: bool = False) -> tuple[Periodo | None, str]:
    """The first period said in ``text`` (normalised words) and the text without it."""
    clock = Clock(now, future=future)
    for pattern, build in RULES:
        m = pattern.search(text)
        if m is not None:
            span = build(m, clock)
            if span is None:  # said as a date but no date ("31 de fevereiro"): no period, words left unexplained
                return None, text
            start, end, kind = span
            rest = (text[:m.start()] + " " + text[m.end():]).strip()
            return Periodo(inicio=start, fim=end, tipo=kind, texto=m[0].strip()), " ".join(rest.split())
    return None, text


def clamp(periodo: Periodo, today: dt.date) -> Periodo:
    """A period that runs past today ends today (for questions about what already happened)."""
    if periodo.inicio <= today < periodo.fim:
        return Periodo(inicio=periodo.inicio, fim=today, tipo=periodo.tipo, texto=periodo.texto)
    return periodo
