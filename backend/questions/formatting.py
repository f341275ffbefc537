"""Numbers and dates the Brazilian way for the answers' sentences (``babel``'s pt_BR locale data).

"R$ 1.234,56", "12,3 kWh", "45,7 %", "16/04/2026", "maio/2026". Money keeps its cents exactly (the values
come rounded to the cent from the bill); energy shows one to three decimals.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Final

from babel.dates import format_date
from babel.numbers import format_currency, format_decimal

LOCALE: Final = "pt_BR"


def brl(value: Decimal) -> str:
    """``Decimal("1234.5")`` -> ``"R$ 1.234,50"`` (a plain space, not babel's no-break space)."""
    return format_currency(value, "BRL", locale=LOCALE).replace("\xa0", " ")


def number(value: float | Decimal, unit: str = "", pattern: str = "#,##0.0##") -> str:
    text = format_decimal(Decimal(str(value)), format=pattern, locale=LOCALE)
    return f"{text} {unit}" if unit else text


def kwh(value: float | Decimal) -> str:
    return number(value, "kWh")


def kw(value: float | Decimal) -> str:
    return number(value, "kW", "#,##0.0#")


def day(value: dt.date) -> str:
    return value.strftime("%d/%m/%Y")


def span(start: dt.date, end: dt.date) -> str:
    """"em 19/05/2026" for one day, "de 16/04/2026 a 15/05/2026" otherwise."""
    return f"em {day(start)}" if start == end else f"de {day(start)} a {day(end)}"


def month(value: dt.date) -> str:
    return format_date(value, "MMMM/yyyy", locale=LOCALE)


def local_time(iso: str) -> str:
    """A local ISO 8601 instant (``2026-05-01T18:15:00-03:00``) -> ``"01/05/2026 às 18:15"``."""
    t = dt.datetime.fromisoformat(iso)
    return f"{t:%d/%m/%Y} às {t:%H:%M}"
