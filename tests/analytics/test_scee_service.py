"""A GD site end to end in the real InfluxDB: import and export registers -> SCEE bill -> credits ledger rebuilt.

July 2026 (local), one meter read every 15 min. Import register: +125 Wh per quarter (500 W all day) ->
31 × 24 × 0.5 = 372 kWh. Export register: +750 Wh per quarter from 10:00 to 15:00 (3 kW for 5 h) -> 31 × 15 =
465 kWh, all fora ponta in a Convencional bill. GD II (2026, 60 %): 372 kWh compensated by the month's
injection, 0 billed, 465 − 372 = 93 kWh become credit of 07/2026. Fio B 372 × 0,6 × 0,441478264 = 98,54 >
availability 50 × 0,92214 = 46,107: the availability is printed and refunded without its taxes ("ajuste").
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal as D

import pytest

from backend.aneel.components import FioBBook
from backend.aneel.records import parse_bandeira_adder, parse_bandeira_month, parse_component, parse_tariff
from backend.aneel.sites import parse_sites
from backend.aneel.tariffs import BandeiraBook, TariffBook
from backend.store.layout import READINGS, RP_RAW
from backend.store.lineprotocol import point
from devstack.aneel_rows import ACIONAMENTO, ADICIONAL, COMPONENTS, REAL_TARIFFS, SCEE_TARIFFS
from protocol.timebase import TZ
from tests.analytics.conftest import ms, service

SITES = parse_sites("""
[[site]]
id = "solar-bh"
distributor = "CEMIG-D"
icms = "0.18"
pis = "0.0095"
cofins = "0.0437"
phases = 2
devices = ["00000000000000c1"]
[site.gd]
regime = "GD II"
state = "MG"
""")


def readings() -> list[str]:
    out = []
    t = dt.datetime(2026, 6, 30, 23, 45, tzinfo=TZ)
    imp, exp = 5_000_000, 1_000_000
    while t <= dt.datetime(2026, 8, 1, 0, 0, tzinfo=TZ):
        out.append(point(READINGS, {"site": "solar-bh", "gateway": "gw1", "device": "00000000000000c1"},
                         {"energy_mwh": imp, "energy_export_mwh": exp, "boot": 1}, ms(t)))
        imp += 125_000
        if 10 <= t.hour < 15:
            exp += 750_000
        t += dt.timedelta(minutes=15)
    return out


@pytest.mark.asyncio
async def test_gd_site_bill_and_ledger_from_both_registers(env) -> None:  # type: ignore[no-untyped-def]
    settings, client = env
    await client.write(readings(), settings.influx_db, rp=RP_RAW, precision="ms")
    svc = service(settings, client, dict(SITES))
    svc.data.tariffs = TariffBook(parse_tariff(r) for r in REAL_TARIFFS + SCEE_TARIFFS)
    svc.data.flags = BandeiraBook((parse_bandeira_month(r) for r in ACIONAMENTO),
                                  (parse_bandeira_adder(r) for r in ADICIONAL))
    svc.data.fio_b = FioBBook(parse_component(r) for rows in COMPONENTS.values() for r in rows)
    svc.data.loaded_at, svc.data.refresh_s = time.monotonic(), 3600.0
    scope = svc.scope("solar-bh", None, None)
    a = ms(dt.datetime(2026, 7, 1, tzinfo=TZ))
    b = ms(dt.datetime(2026, 8, 1, tzinfo=TZ))

    bill = await svc.custo_scee(scope, dt.date(2026, 7, 1), dt.date(2026, 7, 31), a, b)
    assert bill.consumption == {"Não se aplica": D("372.000")}
    assert bill.injection == {"Não se aplica": D("465.000")}
    assert bill.credits.generated == D("93.000") and bill.availability == "ajuste"
    assert any("sem histórico de créditos" in w for w in bill.warnings)
    # SCEE 372 × 0,62352 = 231,94944 -> 231,95; credit 372 × 0,35863304 = 133,41149 -> −133,41;
    # availability 50 × 1,20258216 = 60,13, refund −46,11 -> total 231,95 − 133,41 + 60,13 − 46,11 = 112,56
    assert bill.total == D("112.56")

    first = await svc.creditos(scope, dt.date(2026, 7, 1), dt.date(2026, 7, 31), rebuild=True)
    again = await svc.creditos(scope, dt.date(2026, 7, 1), dt.date(2026, 7, 31), rebuild=True)
    assert first == again and len(first) == 1
    july = first[0]
    assert (july.month, july.injected, july.compensated, july.generated, july.balance) == (
        dt.date(2026, 7, 1), D("465.000"), D("372.000"), D("93.000"), D("93.000"))
    assert july.balance_by_origin == {"2026-07": D("93.000")}
    # August's bill now starts from July's stored balance
    assert await svc.ledger_store().balance_before("solar-bh", dt.date(2026, 8, 1)) is not None
