"""SCEE bills (Lei 14.300/2022) computed by hand, to the cent.

Common data (devstack/aneel_rows.py):

* CEMIG-D, REH 3.589/2026 (vigência 2026-05-28 ->): B1 Convencional TUSD 593,08 + TE 310,21 = 903,29 R$/MWh;
  the real SCEE row TUSD 593,08 + TE 30,44 = 623,52 R$/MWh; TUSD Fio B (Componentes Tarifárias, detalhe SCEE)
  441,478264 R$/MWh. July 2026: bandeira Amarela 18,85 R$/MWh. Calendar-month cycle 01/07–31/07 (31 days).
* MG taxes: ICMS 18 %, PIS 0,95 %, COFINS 4,37 % -> one denominator 1 − 0,18 − 0,0095 − 0,0437 = 0,7668.
  MG exempts compensated energy from ICMS (Convênio 16/2015) and compensated energy pays no PIS/COFINS, so the
  SCEE lines carry no tax: their unit price is the tariff itself.
* Two-phase connection: custo de disponibilidade 50 kWh.

Unit prices with taxes (8 decimals, half up), used below:
  energia      0,90329 / 0,7668 = 1,177999478… -> 1,17799948
  bandeira     0,01885 / 0,7668 = 0,024582681… -> 0,02458268
  SCEE         0,62352 / 1      = 0,62352000
  GD II credit (0,62352 − 0,60 × 0,441478264) / 1 = 0,62352 − 0,2648869584 = 0,3586330416 -> 0,35863304
  disponibil.  (0,90329 + 0,01885) / 0,7668 = 0,92214 / 0,7668 = 1,202582159… -> 1,20258216
Tax lines are the part of the total that is tax: ICMS = Σ taxed amounts × 18 % etc.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest

from backend.analytics.credits import CreditLot
from backend.analytics.scee import SceeBill, explain_scee, fio_b_share, scee_bill
from backend.aneel.components import FioBBook
from backend.aneel.records import parse_bandeira_adder, parse_bandeira_month, parse_component, parse_tariff
from backend.aneel.sites import SiteConfigError, parse_sites
from backend.aneel.tariffs import BandeiraBook, TariffBook, TariffNotFound
from devstack.aneel_rows import ACIONAMENTO, ADICIONAL, COMPONENTS, REAL_TARIFFS, SCEE_TARIFFS

NA = "Não se aplica"
JULY = (dt.date(2026, 7, 1), dt.date(2026, 7, 31))
MAY = (dt.date(2026, 5, 1), dt.date(2026, 5, 31))
TARIFFS = TariffBook(parse_tariff(r) for r in REAL_TARIFFS + SCEE_TARIFFS)
FLAGS = BandeiraBook((parse_bandeira_month(r) for r in ACIONAMENTO), (parse_bandeira_adder(r) for r in ADICIONAL))
FIO_B = FioBBook(parse_component(r) for rows in COMPONENTS.values() for r in rows)
MG = """
distributor = "CEMIG-D"
icms = "0.18"
pis = "0.0095"
cofins = "0.0437"
phases = 2
"""
SITES = parse_sites(f"""
[[site]]
id = "mg-gd1"
{MG}
[site.gd]
regime = "GD I"
state = "MG"
access_date = 2021-09-01

[[site]]
id = "mg-gd2"
{MG}
[site.gd]
regime = "GD II"
state = "MG"
access_date = 2024-03-10

[[site]]
id = "rj-branca"
distributor = "LIGHT SESA"
modality = "Branca"
icms = "0.24"
pis = "0.0123"
cofins = "0.0567"
phases = 1
[site.gd]
regime = "GD II"
state = "RJ"
icms_exempt_compensated = false
""")


def lines(bill: SceeBill) -> list[tuple[str, D, D, D]]:
    return [(ln.kind, ln.kwh, ln.unit_price, ln.amount) for ln in bill.lines]


def taxes(bill: SceeBill) -> list[tuple[str, D, D]]:
    return [(t.name, t.base, t.amount) for t in bill.taxes]


def test_gd1_month_compensates_down_to_the_minimum_and_keeps_the_rest() -> None:
    """GD I, consumption 400 kWh, injection 250 kWh, 300 kWh of credits from 03/2026.

    GD I stops compensating at the custo de disponibilidade (art. 16 caput): at most 400 − 50 = 350 kWh.
    Injection first: 250; credits: 100 (03/2026: 300 -> 200). Billed 400 − 350 = 50 kWh.
      Energia elétrica   50 × 1,17799948 = 58,899974   -> 58,90
      Bandeira Amarela   50 × 0,02458268 = 1,229134    -> 1,23
      Energia SCEE      350 × 0,62352000 = 218,232     -> 218,23
      Compensada GD I   350 × −0,62352000             -> −218,23   (GD I pays nothing on compensated energy)
      Total 58,90 + 1,23 + 218,23 − 218,23 = 60,13
      ICMS 60,13 × 0,18 = 10,8234 -> 10,82; PIS 60,13 × 0,0095 = 0,571235 -> 0,57;
      COFINS 60,13 × 0,0437 = 2,627681 -> 2,63 (only the energy and bandeira lines are taxed)
    Credits: used 100, generated 0, balance 200 kWh of 03/2026.
    """
    bill = scee_bill(SITES["mg-gd1"], *JULY, {NA: 400}, {NA: 250}, [CreditLot(dt.date(2026, 3, 1), D(300))],
                     TARIFFS, FLAGS, FIO_B)
    assert lines(bill) == [
        ("energia", D("50.000"), D("1.17799948"), D("58.90")),
        ("bandeira", D("50.000"), D("0.02458268"), D("1.23")),
        ("scee", D("350.000"), D("0.62352000"), D("218.23")),
        ("compensada", D("350.000"), D("-0.62352000"), D("-218.23")),
    ]
    assert bill.total == D("60.13")
    assert taxes(bill) == [("ICMS", D("60.13"), D("10.82")), ("PIS/PASEP", D("60.13"), D("0.57")),
                           ("COFINS", D("60.13"), D("2.63"))]
    assert bill.availability == "nao_se_aplica"
    assert bill.fio_b_share == 0
    c = bill.credits
    assert (c.from_injection[NA], c.from_credits[NA], c.billed[NA]) == (D(250), D(100), D(50))
    assert c.balance == [CreditLot(dt.date(2026, 3, 1), D(200))]
    assert c.generated == 0 and c.expired == []


def test_gd2_month_2026_pays_60_percent_of_fio_b_on_compensated_energy() -> None:
    """GD II in 2026 (60 %), consumption 600 kWh, injection 300 kWh, 100 kWh of credits from 03/2026.

    GD II compensates all it can: 300 (injection) + 100 (credits) = 400 kWh; billed 200 kWh (above the minimum).
      Energia elétrica   200 × 1,17799948 = 235,599896 -> 235,60
      Bandeira Amarela   200 × 0,02458268 = 4,916536   -> 4,92
      Energia SCEE       400 × 0,62352000 = 249,408    -> 249,41
      Compensada GD II   400 × −0,35863304 = −143,453216 -> −143,45
      (net of the SCEE pair 105,96 ≈ 400 × 0,60 × 0,441478264 = 105,9548: the Fio B share)
      Total 235,60 + 4,92 + 249,41 − 143,45 = 346,48
      ICMS base 235,60 + 4,92 = 240,52: × 0,18 = 43,2936 -> 43,29; PIS × 0,0095 = 2,28494 -> 2,28;
      COFINS × 0,0437 = 10,510724 -> 10,51
    Credits: 100 used, balance 0.
    """
    bill = scee_bill(SITES["mg-gd2"], *JULY, {NA: 600}, {NA: 300}, [CreditLot(dt.date(2026, 3, 1), D(100))],
                     TARIFFS, FLAGS, FIO_B)
    assert lines(bill) == [
        ("energia", D("200.000"), D("1.17799948"), D("235.60")),
        ("bandeira", D("200.000"), D("0.02458268"), D("4.92")),
        ("scee", D("400.000"), D("0.62352000"), D("249.41")),
        ("compensada", D("400.000"), D("-0.35863304"), D("-143.45")),
    ]
    assert bill.total == D("346.48")
    assert taxes(bill) == [("ICMS", D("240.52"), D("43.29")), ("PIS/PASEP", D("240.52"), D("2.28")),
                           ("COFINS", D("240.52"), D("10.51"))]
    assert bill.fio_b_share == D("0.60") and bill.fio_b_rs_mwh == {NA: D("441.478264")}
    assert bill.credits.balance == [] and bill.credits.used_total == 100


def test_credits_expire_after_60_months_and_the_rest_are_used_oldest_first() -> None:
    """GD I, July 2026, consumption 300 kWh, injection 100 kWh; credits 06/2021: 80, 08/2021: 120, 01/2022: 100.

    06/2021 + 60 months = 06/2026 <= 07/2026: the 80 kWh expire before the cycle. Cap 300 − 50 = 250 kWh:
    injection 100, then credits 150 oldest first: 08/2021 gives 120, 01/2022 gives 30 (70 left). Billed 50.
      Energia elétrica 58,90 + bandeira 1,23 (as in the GD I month); SCEE 250 × 0,62352 = 155,88 and −155,88
      Total 60,13. Balance: 70 kWh of 01/2022.
    """
    lots = [CreditLot(dt.date(2021, 6, 1), D(80)), CreditLot(dt.date(2021, 8, 1), D(120)),
            CreditLot(dt.date(2022, 1, 1), D(100))]
    bill = scee_bill(SITES["mg-gd1"], *JULY, {NA: 300}, {NA: 100}, lots, TARIFFS, FLAGS, FIO_B)
    assert lines(bill)[2:] == [("scee", D("250.000"), D("0.62352000"), D("155.88")),
                               ("compensada", D("250.000"), D("-0.62352000"), D("-155.88"))]
    assert bill.total == D("60.13")
    c = bill.credits
    assert c.expired == [CreditLot(dt.date(2021, 6, 1), D(80))]
    assert c.used == [CreditLot(dt.date(2021, 8, 1), D(120)), CreditLot(dt.date(2022, 1, 1), D(30))]
    assert c.balance == [CreditLot(dt.date(2022, 1, 1), D(70))]


def test_fio_b_larger_than_availability_refunds_it_but_keeps_its_taxes() -> None:
    """GD II, consumption 400 kWh, injection 250 kWh, 300 kWh of credits: everything compensated, billed 0 kWh.

    Art. 655-I: availability D = 50 × (0,90329 + 0,01885) = 46,107; billed energy + Fio B
    C = 0 + 400 × 0,60 × 0,441478264 = 105,9548 > D -> the Fio B side is billed: the availability is printed and
    refunded without its taxes (CEMIG-D practice: Convênio 16/2015 never exempts it, its taxes stay).
      Energia SCEE        400 × 0,62352000  = 249,41
      Compensada GD II    400 × −0,35863304 = −143,45
      Custo disponib.      50 × 1,20258216  = 60,129108 -> 60,13
      Ajuste disponib.     50 × −0,92214000 = −46,107   -> −46,11
      Total 249,41 − 143,45 + 60,13 − 46,11 = 119,98  (= Fio B 105,96 + the availability's taxes 14,02)
      ICMS 60,13 × 0,18 = 10,82; PIS 0,57; COFINS 2,63
    Credits: 250 injected + 150 of 03/2026 used; 150 kWh left.
    """
    bill = scee_bill(SITES["mg-gd2"], *JULY, {NA: 400}, {NA: 250}, [CreditLot(dt.date(2026, 3, 1), D(300))],
                     TARIFFS, FLAGS, FIO_B)
    assert bill.availability == "ajuste"
    assert lines(bill) == [
        ("scee", D("400.000"), D("0.62352000"), D("249.41")),
        ("compensada", D("400.000"), D("-0.35863304"), D("-143.45")),
        ("disponibilidade", D("50.000"), D("1.20258216"), D("60.13")),
        ("ajuste_disponibilidade", D("50.000"), D("-0.92214000"), D("-46.11")),
    ]
    assert bill.total == D("119.98")
    assert taxes(bill) == [("ICMS", D("60.13"), D("10.82")), ("PIS/PASEP", D("60.13"), D("0.57")),
                           ("COFINS", D("60.13"), D("2.63"))]
    assert bill.credits.balance == [CreditLot(dt.date(2026, 3, 1), D(150))]


def test_availability_larger_than_fio_b_is_charged_and_absorbs_it() -> None:
    """GD II, consumption 60 kWh, injection 200 kWh: 60 compensated, billed 0, 140 kWh become credit.

    C = 60 × 0,60 × 0,441478264 = 15,8932 < D = 46,107 -> the availability is billed and absorbs the Fio B:
    the compensated energy is credited at the full SCEE price.
      Energia SCEE        60 × 0,62352000 = 37,4112 -> 37,41
      Compensada GD II    60 × −0,62352000          -> −37,41
      Custo disponib.     50 × 1,20258216 = 60,129108 -> 60,13
      Total 60,13 = the larger of the two, with its taxes (ICMS 10,82, PIS 0,57, COFINS 2,63).
    """
    bill = scee_bill(SITES["mg-gd2"], *JULY, {NA: 60}, {NA: 200}, [], TARIFFS, FLAGS, FIO_B)
    assert bill.availability == "complemento"
    assert lines(bill) == [
        ("scee", D("60.000"), D("0.62352000"), D("37.41")),
        ("compensada", D("60.000"), D("-0.62352000"), D("-37.41")),
        ("disponibilidade", D("50.000"), D("1.20258216"), D("60.13")),
    ]
    assert bill.total == D("60.13")
    assert taxes(bill)[0] == ("ICMS", D("60.13"), D("10.82"))
    assert bill.credits.generated == 140
    assert bill.credits.balance == [CreditLot(dt.date(2026, 7, 1), D(140))]


def test_tarifa_branca_export_at_fora_ponta_compensates_its_posto_then_ponta() -> None:
    """Light, Tarifa Branca, GD II 2026, May (31 days, Amarela 18,85); RJ taxes ICMS 24 %, PIS 1,23 %, COFINS
    5,67 %; RJ's exemption ended (documented until 17/12/2025), so compensated energy pays ICMS here.

    Consumption ponta 70, intermediário 40, fora ponta 330; injection 400 kWh, all at fora ponta (noon).
    Per posto (art. 12): fora ponta 330 from its own injection, the 70 left go to the dearest posto, ponta (70).
    Billed: intermediário 40 kWh (≥ 30 kWh, no availability charge).
    Tariffs (R$/kWh): inter 0,82951 + 0,28933 = 1,11884; SCEE ponta 1,17293 + 0,04138 = 1,21431; SCEE fora
    0,48610 + 0,02933 = 0,51543; Fio B ponta 0,78, fora 0,26. Denominators 1 − 0,24 − 0,069 = 0,691 (full) and
    1 − 0,24 = 0,76 (SCEE lines: ICMS only).
      Energia inter       40 × (1,11884 / 0,691 = 1,61916064)           = 64,7664256  -> 64,77
      Bandeira            40 × (0,01885 / 0,691 = 0,02727931)           = 1,0911724   -> 1,09
      SCEE ponta          70 × (1,21431 / 0,76 = 1,59777632)            = 111,8443424 -> 111,84
      Compensada ponta    70 × −((1,21431 − 0,6 × 0,78) / 0,76 = 0,98198684) = −68,7390788 -> −68,74
      SCEE fora          330 × (0,51543 / 0,76 = 0,67819737)            = 223,8051321 -> 223,81
      Compensada fora    330 × −((0,51543 − 0,6 × 0,26) / 0,76 = 0,47293421) = −156,0682893 -> −156,07
      Total 64,77 + 1,09 + 111,84 − 68,74 + 223,81 − 156,07 = 176,70
      ICMS 176,70 × 0,24 = 42,408 -> 42,41; PIS 65,86 × 0,0123 = 0,810078 -> 0,81;
      COFINS 65,86 × 0,0567 = 3,734262 -> 3,73
    """
    bill = scee_bill(SITES["rj-branca"], *MAY, {"Ponta": 70, "Intermediário": 40, "Fora ponta": 330},
                     {"Fora ponta": 400}, [], TARIFFS, FLAGS, FIO_B)
    assert lines(bill) == [
        ("energia", D("40.000"), D("1.61916064"), D("64.77")),
        ("bandeira", D("40.000"), D("0.02727931"), D("1.09")),
        ("scee", D("70.000"), D("1.59777632"), D("111.84")),
        ("compensada", D("70.000"), D("-0.98198684"), D("-68.74")),
        ("scee", D("330.000"), D("0.67819737"), D("223.81")),
        ("compensada", D("330.000"), D("-0.47293421"), D("-156.07")),
    ]
    assert bill.total == D("176.70")
    assert taxes(bill) == [("ICMS", D("176.70"), D("42.41")), ("PIS/PASEP", D("65.86"), D("0.81")),
                           ("COFINS", D("65.86"), D("3.73"))]
    c = bill.credits
    assert c.from_injection == {"Ponta": D(70), "Intermediário": D(0), "Fora ponta": D(330)}
    assert c.billed == {"Ponta": D(0), "Intermediário": D(40), "Fora ponta": D(0)}
    assert bill.fio_b_rs_mwh == {"Ponta": D("780.000000"), "Fora ponta": D("260.000000")}


def test_explanation_prints_every_line_and_the_balance() -> None:
    bill = scee_bill(SITES["mg-gd2"], *JULY, {NA: 400}, {NA: 250}, [CreditLot(dt.date(2026, 3, 1), D(300))],
                     TARIFFS, FLAGS, FIO_B)
    text = explain_scee(bill)
    assert "Energia compensada GD II (31/31 dias): 400,000 kWh × -0,35863304 = R$ -143,45" in text
    assert "Ajuste custo de disponibilidade (art. 655-I): 50,000 kWh × -0,92214000 = R$ -46,11" in text
    assert text[-1] == ("Créditos: gerados 0,000 kWh, usados 150,000 kWh, expirados 0,000 kWh; saldo 150,000 kWh; "
                        "03/2026: 150,000")


def test_fio_b_share_by_calendar_year() -> None:
    gd2 = SITES["mg-gd2"].gd
    gd1 = SITES["mg-gd1"].gd
    assert gd1 is not None and gd2 is not None
    assert [fio_b_share(gd2, y)[0] for y in range(2022, 2029)] == [D(0), D("0.15"), D("0.30"), D("0.45"),
                                                                   D("0.60"), D("0.75"), D("0.90")]
    assert fio_b_share(gd1, 2026) == (D(0), "")
    share, note = fio_b_share(gd2, 2029)
    assert share == 1 and "art. 17" in note


def test_configured_fio_b_when_the_distributor_has_no_row() -> None:
    """ELETROPAULO has no Componentes row: the site's gd.fio_b_rs_mwh is used, and the bill says so; without it the
    bill is refused with a message naming the setting. (Enel SP has no SCEE row either, so only the lookup is
    exercised here.)"""
    enel = TARIFFS.resolve_cnpj("ELETROPAULO")
    got = FIO_B.fio_b(enel, dt.date(2026, 8, 1), subgroup="B1", modality="Convencional", posto=NA,
                      configured=D("300.5"))
    assert (got.rs_mwh, got.source) == (D("300.5"), "configurado")
    with pytest.raises(TariffNotFound, match=r"gd\.fio_b_rs_mwh"):
        FIO_B.fio_b(enel, dt.date(2026, 8, 1), subgroup="B1", modality="Convencional", posto=NA)


def test_fio_b_prefers_the_scee_detail_and_the_vigencia_of_the_day() -> None:
    cemig = TARIFFS.resolve_cnpj("CEMIG-D")
    def fio_b(day: dt.date) -> D:
        return FIO_B.fio_b(cemig, day, subgroup="B1", modality="Convencional", posto=NA).rs_mwh

    assert fio_b(dt.date(2026, 7, 1)) == D("441.478264")  # SCEE over "Não se aplica"
    assert fio_b(dt.date(2026, 1, 10)) == D("402.115000")  # REH 2025's row


def test_gd_config_is_validated() -> None:
    with pytest.raises(SiteConfigError, match="GD II"):
        parse_sites('[[site]]\nid = "x"\ndistributor = "CEMIG-D"\n[site.gd]\nregime = "GD I"\n'
                    'access_date = 2023-06-01\n')
    with pytest.raises(SiteConfigError, match="UF"):
        parse_sites('[[site]]\nid = "x"\ndistributor = "CEMIG-D"\n[site.gd]\nregime = "GD II"\nstate = "Minas"\n')
