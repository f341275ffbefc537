"""The articles never contradict the app: every number an article shares with the code is checked against it.

An article is prose, so these tests read the figures out of it (tables and sentences) and compare them with the
constants and seeded ANEEL rows the app computes with. Change one side without the other and a test fails.
"""

from __future__ import annotations

import re
from decimal import Decimal

from backend.analytics.alert_rules import LIMITS, MIN_LOAD_W
from backend.aneel.postos import KNOWN_WINDOWS
from backend.aneel.records import parse_bandeira_adder, parse_tariff
from backend.aneel.sites import AVAILABILITY_KWH
from backend.knowledge.sources import ARTICLES_DIR, parse_article
from backend.settings import Settings
from devstack.aneel_rows import ADICIONAL, REAL_TARIFFS


def article(name: str) -> str:
    entry = parse_article(ARTICLES_DIR / f"{name}.md", name)
    return entry.body


def br(x: Decimal | float | int) -> str:
    """A number as pt-BR text: 18,85; 0,92."""
    return str(x).replace(".", ",")


def test_prodist_voltage_ranges_match_the_alert_limits() -> None:
    text = article("limites-de-tensao-prodist")
    for nominal, ((a_lo, a_hi), (p_lo, p_hi)) in LIMITS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"{nominal} V ·"))
        assert f"{a_lo:.0f} a {a_hi:.0f} V" in row
        assert f"{p_lo:.0f} a {a_lo:.0f} V ou {a_hi:.0f} a {p_hi:.0f} V" in row
        assert f"abaixo de {p_lo:.0f} V ou acima de {p_hi:.0f} V" in row


def test_availability_minimums_match_the_billing() -> None:
    text = article("custo-de-disponibilidade")
    mono, bi, tri = AVAILABILITY_KWH[1], AVAILABILITY_KWH[2], AVAILABILITY_KWH[3]
    assert f"{mono} kWh para ligações monofásicas, {bi} kWh para bifásicas e {tri} kWh para trifásicas" in text
    assert f"{mono}, {bi} ou {tri} kWh" in article("por-que-a-conta-mudou")


def test_power_factor_reference_and_minimum_load_match_the_alert() -> None:
    text = article("fator-de-potencia")
    assert f"abaixo de {br(Settings().alerts_pf_min)}" in text
    assert f"pelo menos {MIN_LOAD_W:.0f} W" in text


def test_bandeira_adders_match_aneel_rows_of_reh_3306() -> None:
    adders = {a.flag: a.adder_rs_mwh for a in map(parse_bandeira_adder, ADICIONAL) if "3.306/2024" in a.resolution}
    scarcity = next(a.adder_rs_mwh for a in map(parse_bandeira_adder, ADICIONAL) if a.flag == "Escassez Hídrica")
    table = article("bandeiras-tarifarias")
    for flag, label in (("Amarela", "Amarela"), ("Vermelha P1", "Vermelha patamar 1"),
                        ("Vermelha P2", "Vermelha patamar 2")):
        value = adders[flag]
        assert f"{label} · {br(value)} · {br(value / 1000)}" in table, (flag, value)
    assert f"{br(scarcity)} R$/MWh" in table
    summary = article("por-que-a-conta-mudou")
    for flag in ("Amarela", "Vermelha P1", "Vermelha P2"):
        assert f"R$ {br(adders[flag])}" in summary


def test_tarifa_branca_windows_match_the_built_in_postos() -> None:
    text = article("postos-tarifarios-tarifa-branca")
    names = {"CEMIG-D": "CEMIG-D", "ELETROPAULO": "Enel SP", "CPFL-PAULISTA": "CPFL Paulista",
             "CPFL-PIRATINING": "CPFL Piratininga", "CELESC": "CELESC", "LIGHT SESA": "Light"}
    assert set(names) == {k for k in KNOWN_WINDOWS if not k.isdigit()}

    def h(hhmm: str) -> str:
        return hhmm.replace(":", "h")

    for key, label in names.items():
        w = KNOWN_WINDOWS[key]
        row = next(line for line in text.splitlines() if line.startswith(label))
        assert f"{h(w.ponta[0])}–{h(w.ponta[1])}" in row, (key, row)
        inter = " e ".join(f"{h(a)}–{h(b)}" for a, b in w.intermediario)
        assert inter in row, (key, row)


def test_tariff_examples_match_the_real_aneel_rows() -> None:
    rows = [parse_tariff(r) for r in REAL_TARIFFS]
    cemig = next(r for r in rows if r.distributor == "CEMIG-D" and r.base == "Tarifa de Aplicação"
                 and r.detail == "Não se aplica" and r.subclass == "Residencial" and r.start.year == 2026
                 and r.start.month == 5)
    te_tusd = article("te-tusd")
    assert f"TUSD {br(cemig.tusd)} e TE {br(cemig.te_rs_mwh)} R$/MWh" in te_tusd
    assert f"R$ {br((cemig.tusd + cemig.te_rs_mwh) / 1000)} por kWh" in te_tusd
    light = {(r.modality, r.posto): (r.tusd + r.te_rs_mwh) / 1000 for r in rows if r.distributor == "LIGHT SESA"
             and r.subgroup == "B1"}
    branca = article("postos-tarifarios-tarifa-branca")
    assert f"custa R$ {br(light[('Convencional', 'Não se aplica')])}" in branca
    for posto, words in (("Ponta", "na ponta"), ("Intermediário", "no intermediário"), ("Fora ponta", "fora ponta")):
        assert f"R$ {br(light[('Branca', posto)])} {words}" in branca


def test_tax_example_follows_the_billing_formula() -> None:
    text = article("icms-pis-cofins")
    subtotal, icms, pis, cofins = Decimal("373.80"), Decimal("0.24"), Decimal("0.0123"), Decimal("0.0567")
    gross = subtotal / ((1 - icms) * (1 - pis - cofins))
    icms_rs = gross * icms

    def cents(x: Decimal) -> str:
        return br(x.quantize(Decimal("0.01")))

    assert f"= R$ {cents(gross)}" in text
    assert f"o ICMS é R$ {cents(icms_rs)}, o PIS R$ {cents((gross - icms_rs) * pis)} e a COFINS R$ " \
           f"{cents((gross - icms_rs) * cofins)}" in text


def test_every_endpoint_an_article_names_exists() -> None:
    from backend.api.app import ROUTE_HANDLERS, create_app

    app = create_app(Settings(jwt_secret="x" * 32))
    assert ROUTE_HANDLERS
    paths = {route.path for route in app.routes}
    for path in sorted(ARTICLES_DIR.glob("*.md")):
        for endpoint in re.findall(r"GET (/api/v1/[a-z0-9/_-]+)", path.read_text(encoding="utf-8")):
            assert endpoint in paths, f"{path.name} names {endpoint}, which the API does not serve"
