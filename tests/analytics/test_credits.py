"""The SCEE credits ledger: expiry, FIFO, per-posto netting, GD I cap, and rebuilding being a pure function."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from backend.analytics.credits import CreditLot, add_months, allocate, ledger

NA = "Não se aplica"


def test_credits_of_month_o_are_usable_until_o_plus_59_and_expire_at_o_plus_60() -> None:
    lot = CreditLot(dt.date(2021, 7, 1), D(50))
    assert lot.expires == dt.date(2026, 7, 1)
    june = allocate(dt.date(2026, 6, 1), {NA: D(10)}, {NA: D(0)}, [lot])
    assert june.from_credits[NA] == 10 and june.expired == []
    july = allocate(dt.date(2026, 7, 1), {NA: D(10)}, {NA: D(0)}, [lot])
    assert july.from_credits[NA] == 0 and july.expired == [lot] and july.balance == []


def test_injection_first_then_credits_oldest_first() -> None:
    lots = [CreditLot(dt.date(2025, 2, 1), D(30)), CreditLot(dt.date(2024, 11, 1), D(20))]
    a = allocate(dt.date(2026, 3, 1), {NA: D(100)}, {NA: D(60)}, lots)
    assert a.from_injection[NA] == 60 and a.from_credits[NA] == 40
    assert a.used == [CreditLot(dt.date(2024, 11, 1), D(20)), CreditLot(dt.date(2025, 2, 1), D(20))]
    assert a.balance == [CreditLot(dt.date(2025, 2, 1), D(10))]


def test_per_posto_same_posto_first_then_dearest_postos_then_credits() -> None:
    a = allocate(dt.date(2026, 1, 1), {"Ponta": D(10), "Intermediário": D(5), "Fora ponta": D(50)},
                 {"Fora ponta": D(58), "Ponta": D(2)}, [CreditLot(dt.date(2025, 12, 1), D(4))])
    # ponta 2 from its own posto; fora ponta 50 from its own; its 8 left: ponta 8, then intermediário 0;
    # credits: intermediário 4 of 5.
    assert a.from_injection == {"Ponta": D(10), "Intermediário": D(0), "Fora ponta": D(50)}
    assert a.from_credits == {"Ponta": D(0), "Intermediário": D(4), "Fora ponta": D(0)}
    assert a.billed == {"Ponta": D(0), "Intermediário": D(1), "Fora ponta": D(0)}
    assert a.generated == 0


def test_gd1_cap_keeps_credit_for_the_minimum() -> None:
    """The solarz example: three-phase, consumes and injects 1 000 kWh -> compensates 900, keeps 100."""
    months = [(dt.date(2026, 1, 1), {NA: D(1000)}, {NA: D(1000)})]
    (gd1,) = ledger(months, regime="GD I", availability_kwh=100)
    assert gd1.compensated_total == 900 and gd1.generated == 100
    (gd2,) = ledger(months, regime="GD II", availability_kwh=100)
    assert gd2.compensated_total == 1000 and gd2.generated == 0


def test_ledger_over_61_months_is_deterministic_and_expires_the_first_surplus() -> None:
    start = dt.date(2021, 1, 1)
    months = [(add_months(start, i), {NA: D(100)}, {NA: D(150) if i == 0 else D(100)}) for i in range(61)]
    first = ledger(months, regime="GD II", availability_kwh=50)
    again = ledger(months, regime="GD II", availability_kwh=50)
    assert first == again
    assert first[0].balance == [CreditLot(start, D(50))]
    assert first[59].balance == [CreditLot(start, D(50))]  # 12/2025: still usable, never needed
    assert first[60].month == dt.date(2026, 1, 1) and first[60].expired == [CreditLot(start, D(50))]
    assert first[60].balance == []
