"""A month of known consumption priced to the cent, Convencional and Tarifa Branca, computed by hand.

Site: LIGHT SESA (CNPJ 60444437000146), B1 Residencial, real REH 3.571/2026 rows (vigência 2026-03-15 ->
2027-03-14): Convencional TUSD 578,56 / TE 302,00; Branca Ponta 1172,93 / 441,38, Intermediário 829,51 /
289,33, Fora ponta 486,10 / 289,33 (R$/MWh). Light's windows: ponta 17:30-20:30, intermediário 16:30-17:30 and
20:30-21:30. Taxes: ICMS 24 %, PIS 1,23 %, COFINS 5,67 % (Light, Aug/2026).

Cycle: reading day 15 -> 2026-04-16 .. 2026-05-15 = 30 days: 15 in April (bandeira Verde, ,00) and 15 in May
(Amarela, 18,85 R$/MWh): the flag changes mid-cycle. Non-working days: 8 weekend days plus two holidays,
Tue 21/04 (Tiradentes) and Fri 01/05 (Dia do Trabalhador) -> 20 working days, 10 non-working.

Load: 0,5 kWh every hour plus 1,0 kWh extra in the 18h and 19h hours -> 14 kWh/day, 420 kWh in the cycle.
Hourly energy is spread evenly over 15-min slices, so on a working day:
  16h: 16:00-16:30 fora 0,25 | 16:30-17:00 inter 0,25;  17h: 17:00-17:30 inter 0,25 | 17:30-18:00 ponta 0,25
  18h, 19h: ponta 1,5 each;  20h: 20:00-20:30 ponta 0,25 | 20:30-21:00 inter 0,25
  21h: 21:00-21:30 inter 0,25 | 21:30-22:00 fora 0,25
  -> ponta 3,5, intermediário 1,0, fora ponta 9,5 kWh/day.
Cycle: ponta 20 x 3,5 = 70; intermediário 20 x 1 = 20; fora ponta 20 x 9,5 + 10 x 14 = 330 kWh.

Every line is quantity × unit price with taxes (8 decimals), rounded to the cent; the total is the sum of the
lines. Tax factor (1 - 0,24) x (1 - 0,0123 - 0,0567) = 0,76 x 0,931 = 0,70756.
Convencional:
  TUSD 420 x 578,56/1000/0,70756 = 420 x 0,81768331 = 343,4269... -> 343,43
  TE   420 x 302,00/1000/0,70756 = 420 x 0,42681893 = 179,2639... -> 179,26
  Bandeira Verde 04/2026: 420 x 15/30 = 210 kWh x 0 = 0,00;  Amarela 05/2026: 210 x 18,85/1000/0,70756 =
  210 x 0,02664085 = 5,5946 -> 5,59
  Total = 343,43 + 179,26 + 0,00 + 5,59 = 528,28; ICMS (incluso) 528,28 x 0,24 = 126,7872 -> 126,79;
  PIS (528,28 - 126,79) x 0,0123 = 4,9383 -> 4,94; COFINS 401,49 x 0,0567 = 22,7645 -> 22,76
Branca:
  Ponta TUSD 70 x 1,65771101 = 116,0398 -> 116,04;  TE 70 x 0,62380575 = 43,6664 -> 43,67
  Inter TUSD 20 x 1,17235287 = 23,4471 -> 23,45;    TE 20 x 0,40891232 = 8,1782 -> 8,18
  Fora  TUSD 330 x 0,68700888 = 226,7129 -> 226,71; TE 330 x 0,40891232 = 134,9411 -> 134,94
  Bandeira 0,00 + 5,59;  Total 558,58; ICMS 134,06; PIS 424,52 x 0,0123 = 5,2216 -> 5,22; COFINS 24,07
Saving of Branca = 528,28 - 558,58 = -30,30 (Branca is dearer: the evening load sits in ponta).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

from backend.analytics.billing import estimate_bill, explain
from backend.aneel.postos import split_by_posto
from backend.aneel.records import parse_bandeira_adder, parse_bandeira_month, parse_tariff
from backend.aneel.sites import parse_sites
from backend.aneel.tariffs import BandeiraBook, TariffBook
from backend.store.registers import Sample, consumption
from devstack.aneel_rows import ACIONAMENTO, ADICIONAL, QUIRK_TARIFFS, REAL_TARIFFS

SITES = parse_sites("""
[[site]]
id = "casa-rio"
distributor = "LIGHT SESA"
subgroup = "B1"
modality = "Convencional"
icms = "0.24"
pis = "0.0123"
cofins = "0.0567"
billing_day = 15
""")
TZ_OFFSET = dt.timezone(dt.timedelta(hours=-3))


def books() -> tuple[TariffBook, BandeiraBook]:
    tariffs = TariffBook(parse_tariff(r) for r in REAL_TARIFFS + QUIRK_TARIFFS)
    flags = BandeiraBook((parse_bandeira_month(r) for r in ACIONAMENTO), (parse_bandeira_adder(r) for r in ADICIONAL))
    return tariffs, flags


def register_samples(start: dt.date, days: int) -> list[Sample]:
    """The load above as a cumulative register read every 15 min (mWh)."""
    out, energy = [], 10_000_000  # the register does not start at 0
    t = dt.datetime(start.year, start.month, start.day, tzinfo=TZ_OFFSET)
    end = t + dt.timedelta(days=days)
    while t <= end:
        out.append(Sample(int(t.timestamp() * 1000), energy, 3))
        watts = 500 + (1000 if t.hour in (18, 19) else 0)
        energy += watts * 1000 // 4  # 15 min at `watts` W = watts/4 Wh = watts*250 mWh
        t += dt.timedelta(minutes=15)
    return out


def test_month_priced_to_the_cent_both_modalities_with_flag_change_and_holidays() -> None:
    site = SITES["casa-rio"]
    tariffs, flags = books()
    start, end = site.cycle_for(dt.date(2026, 5, 2))
    assert (start, end) == (dt.date(2026, 4, 16), dt.date(2026, 5, 15))

    t0 = int(dt.datetime(2026, 4, 16, tzinfo=TZ_OFFSET).timestamp() * 1000)
    t1 = int(dt.datetime(2026, 5, 16, tzinfo=TZ_OFFSET).timestamp() * 1000)
    hourly = consumption([register_samples(start, 30)], t0, t1, "hour")
    assert hourly.kwh_total == 420.0
    split = split_by_posto(((b.start_ms, b.end_ms, b.kwh) for b in hourly.buckets), site.windows())
    assert {k: round(v, 6) for k, v in split.kwh.items()} == {"Ponta": 70.0, "Intermediário": 20.0,
                                                              "Fora ponta": 330.0}

    conv = estimate_bill(site, start, end, split.kwh, tariffs, flags, modality="Convencional")
    assert [(ln.kind, ln.unit_price, ln.amount) for ln in conv.lines] == [
        ("tusd", D("0.81768331"), D("343.43")), ("te", D("0.42681893"), D("179.26")),
        ("bandeira", D("0"), D("0.00")), ("bandeira", D("0.02664085"), D("5.59"))]
    assert conv.tax_factor == D("0.70756")
    assert [(t.base, t.amount) for t in conv.taxes] == [
        (D("528.28"), D("126.79")), (D("401.49"), D("4.94")), (D("401.49"), D("22.76"))]
    assert conv.total == D("528.28") == sum(ln.amount for ln in conv.lines)
    assert conv.subtotal == D("373.79")
    assert conv.rehs == ["RESOLUÇÃO HOMOLOGATÓRIA Nº 3.571, DE 10 DE MARÇO DE 2026"]
    assert conv.warnings == []

    branca = estimate_bill(site, start, end, split.kwh, tariffs, flags, modality="Branca")
    assert [ln.amount for ln in branca.lines] == [
        D("116.04"), D("43.67"), D("23.45"), D("8.18"), D("226.71"), D("134.94"), D("0.00"), D("5.59")]
    assert [t.amount for t in branca.taxes] == [D("134.06"), D("5.22"), D("24.07")]
    assert branca.total == D("558.58")
    assert branca.kwh_total == conv.kwh_total == D("420.000")
    assert conv.total - branca.total == D("-30.30")

    text = "\n".join(explain(conv))
    assert "Bandeira Amarela 05/2026 (15/30 dias): 210,000 kWh × 0,02664085 (18,85 R$/MWh) = R$ 5,59" in text
    assert "ICMS 24,00 % (incluso) sobre R$ 528,28 = R$ 126,79" in text
    assert "Total: R$ 528,28" in text


def test_cemig_worked_example_from_research_notes() -> None:
    """CEMIG-D REH 3.589/2026, 200 kWh, Amarela, no taxes: 200 x 903,29/1000 + 200 x 18,85/1000 = 184,428.

    Billed per line (no taxes: unit prices 0,59308 / 0,31021 / 0,01885): TUSD 200 x 0,59308 = 118,616 -> 118,62;
    TE 200 x 0,31021 = 62,042 -> 62,04; bandeira 3,77 -> total 184,43 (the unrounded sum is 184,428).
    """
    site = parse_sites('[[site]]\nid = "bh"\ndistributor = "06981180000116"\n')["bh"]
    tariffs, flags = books()
    bill = estimate_bill(site, dt.date(2026, 6, 1), dt.date(2026, 6, 30), {"Não se aplica": 200}, tariffs, flags)
    assert [ln.amount for ln in bill.lines] == [D("118.62"), D("62.04"), D("3.77")]
    assert bill.total == D("184.43")
    assert bill.distributor == "CEMIG-D"


def test_tariff_change_inside_cycle_is_prorated_by_days() -> None:
    """CEMIG-D: REH 3.459 until 2026-05-27, REH 3.589 from 2026-05-28. Cycle 2026-05-16..06-15 (31 days):
    12 days old (16..27 May) and 19 days new (28 May..15 June). 310 kWh -> 120 and 190 kWh (no taxes):
      TUSD old 310 x 541,30/1000 x 12/31 = 64,9560 -> 64,96;  TE old 310 x 317,28/1000 x 12/31 = 38,0736 -> 38,07
      TUSD new 310 x 593,08/1000 x 19/31 = 112,6852 -> 112,69; TE new 310 x 310,21/1000 x 19/31 = 58,9399 -> 58,94
      Bandeira Amarela 05 (16 days) 310 x 18,85/1000 x 16/31 = 3,016 -> 3,02; 06 (15 days) = 2,8275 -> 2,83
    """
    site = parse_sites('[[site]]\nid = "bh"\ndistributor = "CEMIG-D"\nbilling_day = 15\n')["bh"]
    tariffs, flags = books()
    start, end = site.cycle_for(dt.date(2026, 6, 1))
    assert (start, end, (end - start).days + 1) == (dt.date(2026, 5, 16), dt.date(2026, 6, 15), 31)
    bill = estimate_bill(site, start, end, {"x": 310}, tariffs, flags)
    assert [ln.kwh for ln in bill.lines] == [D(120), D(120), D(190), D(190), D(160), D(150)]
    assert [(ln.days, ln.amount) for ln in bill.lines] == [
        (12, D("64.96")), (12, D("38.07")), (19, D("112.69")), (19, D("58.94")), (16, D("3.02")), (15, D("2.83"))]
    assert len(bill.rehs) == 2


def test_custo_de_disponibilidade_bills_the_minimum() -> None:
    """Monofásico, 20 kWh: 10 kWh short of 30 are billed at 903,29 R$/MWh -> 9,03 (CEMIG-D June 2026)."""
    site = parse_sites('[[site]]\nid = "bh"\ndistributor = "CEMIG-D"\nphases = 1\n')["bh"]
    tariffs, flags = books()
    bill = estimate_bill(site, dt.date(2026, 6, 1), dt.date(2026, 6, 30), {"x": 20}, tariffs, flags)
    assert [ln.kind for ln in bill.lines] == ["tusd", "te", "disponibilidade", "bandeira"]
    assert bill.lines[2].amount == D("9.03")
