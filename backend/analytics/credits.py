"""SCEE energy credits: how a month's injection and the stored credits compensate its consumption (sans-IO).

Lei 14.300/2022 fixes the order, and this module only moves kWh (prices are :mod:`backend.analytics.scee`'s):

1. **Expiry** (art. 13): a credit is valid 60 months from the bill that generated it. Credits of origin month O
   are still usable in the cycle of month O + 59 and expire at the start of the cycle of month O + 60 (our
   reading of "60 meses"); expired kWh revert to the tariff's modicidade and are reported.
2. **The month's injection first** (art. 26 §1 I: the positive difference is consumption − (injection +
   credits)), netted **per posto** (art. 12): a posto's injection compensates the same posto's consumption, then
   the other postos' — kWh for kWh, since the component ratio of §3 applies to group A only.
3. **Stored credits, oldest first** (FIFO, art. 13), kWh for kWh into whatever consumption is left.
4. **Surplus** injection becomes a credit whose origin is this month, carried to the next cycle.

Where compensation stops: a **GD I** unit keeps REN 482's rule (art. 16 caput) — compensation never takes the
billed energy below the custo de disponibilidade (30/50/100 kWh), so a unit that consumes and injects 1 000 kWh
on a three-phase connection compensates 900 kWh, pays the 100-kWh minimum as energy and keeps 100 kWh of credit.
A **GD II** unit compensates all it can: for it the minimum applies only through REN 1.000 art. 655-I (the larger
of the custo de disponibilidade and the billed energy plus the Fio B charge), which is priced, not netted, here
(art. 16 §1: the minimum of a non-GD I unit ignores the compensation).

When consumption is left after the same posto, postos are served dearest first (Ponta, Intermediário, Fora
ponta): the law says "sequentially" without an order, and this one is the consumer's best.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Final

import msgspec

CREDIT_LIFE_MONTHS: Final = 60
POSTO_ORDER: Final = ("Ponta", "Intermediário", "Fora ponta", "Não se aplica")
"""Order in which a posto's consumption is served once its own posto's injection is used up."""
ZERO: Final = Decimal(0)


class CreditLot(msgspec.Struct, frozen=True):
    """kWh of credit generated in one cycle (``origin``: first day of the cycle's reference month)."""

    origin: dt.date
    kwh: Decimal

    @property
    def expires(self) -> dt.date:
        """First day of the month whose cycle no longer accepts these credits (origin + 60 months)."""
        return add_months(self.origin, CREDIT_LIFE_MONTHS)


class Allocation(msgspec.Struct, frozen=True):
    """One cycle of the ledger: what compensated what, and the credits carried on."""

    month: dt.date
    """Reference month of the cycle (first day)."""
    consumption: dict[str, Decimal]
    injection: dict[str, Decimal]
    from_injection: dict[str, Decimal]
    """Per consumption posto: kWh compensated with this cycle's injection."""
    from_credits: dict[str, Decimal]
    """Per consumption posto: kWh compensated with stored credits."""
    billed: dict[str, Decimal]
    """Per posto: consumption − compensated (priced at the normal tariff)."""
    used: list[CreditLot]
    """kWh taken from each origin month (FIFO)."""
    expired: list[CreditLot]
    generated: Decimal
    """Surplus injection that became a credit of origin ``month``."""
    balance: list[CreditLot]
    """Credits carried to the next cycle, oldest first."""

    @property
    def compensated(self) -> dict[str, Decimal]:
        return {p: self.from_injection[p] + self.from_credits[p] for p in self.consumption}

    @property
    def compensated_total(self) -> Decimal:
        return sum(self.compensated.values(), ZERO)

    @property
    def billed_total(self) -> Decimal:
        return sum(self.billed.values(), ZERO)

    @property
    def used_total(self) -> Decimal:
        return sum((lot.kwh for lot in self.used), ZERO)

    @property
    def expired_total(self) -> Decimal:
        return sum((lot.kwh for lot in self.expired), ZERO)

    @property
    def balance_total(self) -> Decimal:
        return sum((lot.kwh for lot in self.balance), ZERO)


def add_months(day: dt.date, months: int) -> dt.date:
    """First day of the month ``months`` after ``day``'s month."""
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def _order(postos: Iterable[str]) -> list[str]:
    known = [p for p in POSTO_ORDER if p in postos]
    return known + sorted(p for p in postos if p not in POSTO_ORDER)


def allocate(
    month: dt.date,
    consumption: Mapping[str, Decimal],
    injection: Mapping[str, Decimal],
    lots: Sequence[CreditLot],
    *,
    limit_kwh: Decimal | None = None,
) -> Allocation:
    """Compensate one cycle (see the module doc). ``limit_kwh`` caps the kWh compensated (GD I: consumption −
    custo de disponibilidade); None = no cap (GD II). Posto keys are ANEEL's (``"Não se aplica"`` for
    Convencional); a posto present only in ``injection`` is a source, not a consumption posto."""
    month = month.replace(day=1)
    postos = _order(consumption)
    need = {p: consumption[p] for p in postos}
    left = {p: injection[p] for p in _order(injection)}
    room = limit_kwh if limit_kwh is not None else sum(need.values(), ZERO)
    room = max(room, ZERO)
    from_inj = dict.fromkeys(postos, ZERO)
    from_cred = dict.fromkeys(postos, ZERO)

    def take(p: str, available: Decimal) -> Decimal:
        nonlocal room
        q = min(need[p], available, room)
        need[p] -= q
        room -= q
        return q

    for p in postos:  # the same posto first
        if p in left:
            q = take(p, left[p])
            left[p] -= q
            from_inj[p] += q
    for src in left:  # then the other postos, kWh for kWh
        for p in postos:
            q = take(p, left[src])
            left[src] -= q
            from_inj[p] += q

    kept = sorted((lot for lot in lots if lot.kwh > 0), key=lambda lot: lot.origin)
    expired = [lot for lot in kept if lot.expires <= month]
    stock = {lot.origin: lot.kwh for lot in kept if lot.expires > month}  # insertion order = oldest first
    used: dict[dt.date, Decimal] = {}
    for p in postos:  # stored credits, oldest first
        for origin, kwh in stock.items():
            q = take(p, kwh)
            if q:
                stock[origin] = kwh - q
                used[origin] = used.get(origin, ZERO) + q
                from_cred[p] += q

    generated = sum(left.values(), ZERO)
    balance = [CreditLot(origin=o, kwh=k) for o, k in stock.items() if k > 0]
    if generated > 0:
        balance.append(CreditLot(origin=month, kwh=generated))
    return Allocation(
        month=month, consumption={p: consumption[p] for p in postos}, injection=dict(injection),
        from_injection=from_inj, from_credits=from_cred,
        billed={p: consumption[p] - from_inj[p] - from_cred[p] for p in postos},
        used=[CreditLot(origin=o, kwh=k) for o, k in sorted(used.items())], expired=expired,
        generated=generated, balance=balance,
    )


def compensation_limit(regime: str, consumption_total: Decimal, availability_kwh: int) -> Decimal | None:
    """The cap on compensated kWh: GD I stops at the custo de disponibilidade (art. 16 caput), GD II has none."""
    if regime == "GD I":
        return max(consumption_total - availability_kwh, ZERO)
    return None


def ledger(
    months: Iterable[tuple[dt.date, Mapping[str, Decimal], Mapping[str, Decimal]]],
    *,
    regime: str,
    availability_kwh: int,
    opening: Sequence[CreditLot] = (),
) -> list[Allocation]:
    """Fold consecutive cycles ``(month, consumption by posto, injection by posto)`` from an ``opening`` balance:
    the same input always gives the same ledger, which is what makes rebuilding it from the data idempotent."""
    out: list[Allocation] = []
    lots: Sequence[CreditLot] = opening
    for month, cons, inj in months:
        cap = compensation_limit(regime, sum(cons.values(), ZERO), availability_kwh)
        a = allocate(month, cons, inj, lots, limit_kwh=cap)
        out.append(a)
        lots = a.balance
    return out
