"""ANEEL data quirks: overlapping vigências, 1-January split, expired tariff without successor, renamed distributor,
bandeira month not yet published."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from backend.aneel.records import parse_bandeira_adder, parse_bandeira_month, parse_tariff
from backend.aneel.tariffs import BandeiraBook, TariffBook, TariffNotFound, merge_periods
from devstack.aneel_rows import ACIONAMENTO, ADICIONAL, QUIRK_TARIFFS, REAL_TARIFFS

BOOK = TariffBook(parse_tariff(r) for r in REAL_TARIFFS + QUIRK_TARIFFS)
FLAGS = BandeiraBook((parse_bandeira_month(r) for r in ACIONAMENTO), (parse_bandeira_adder(r) for r in ADICIONAL))


def conv(cnpj: str, day: dt.date):  # type: ignore[no-untyped-def]
    return BOOK.energy_tariffs(cnpj, day, subgroup="B1", modality="Convencional")["Não se aplica"]


def test_overlapping_vigencias_latest_start_wins() -> None:
    before = conv("11111111000191", dt.date(2026, 2, 15))
    after = conv("11111111000191", dt.date(2026, 3, 1))
    assert (before.record.tusd, before.candidates) == (Decimal("500.00"), 1)
    assert (after.record.tusd, after.candidates) == (Decimal("510.00"), 2)
    assert after.record.reh.startswith("DESPACHO")


def test_split_on_1_january_is_seamless_and_merges_back() -> None:
    dec31 = conv("06981180000116", dt.date(2025, 12, 31))
    jan1 = conv("06981180000116", dt.date(2026, 1, 1))
    assert dec31.record.end == dt.date(2025, 12, 31) and jan1.record.start == dt.date(2026, 1, 1)
    assert dec31.record.energy_rs_kwh == jan1.record.energy_rs_kwh == Decimal("0.85858")
    periods = merge_periods(BOOK.rows("06981180000116", subgroup="B1", modality="Convencional",
                                      subclass="Residencial"))
    assert [(p.start, p.end) for p in periods] == [
        (dt.date(2025, 5, 28), dt.date(2026, 5, 27)), (dt.date(2026, 5, 28), dt.date(2027, 5, 27))]


def test_expired_tariff_without_successor_is_used_and_flagged() -> None:
    choice = conv("22222222000191", dt.date(2026, 6, 1))
    assert choice.expired and choice.record.end == dt.date(2026, 4, 21)
    assert not conv("22222222000191", dt.date(2026, 4, 21)).expired


def test_before_first_vigencia_is_not_found() -> None:
    with pytest.raises(TariffNotFound):
        conv("22222222000191", dt.date(2024, 1, 1))


def test_renamed_distributor_resolves_by_cnpj() -> None:
    old, new = BOOK.resolve_cnpj("RGE SUL"), BOOK.resolve_cnpj("rge")
    assert old == new == "02016440000162"
    assert BOOK.current_name(old) == "RGE"
    assert conv(old, dt.date(2025, 6, 1)).record.distributor == "RGE SUL"
    assert conv(old, dt.date(2026, 6, 1)).record.tusd == Decimal("470.00")


def test_unknown_distributor() -> None:
    with pytest.raises(TariffNotFound):
        BOOK.resolve_cnpj("NÃO EXISTE")


def test_trailing_space_and_empty_reh_are_normalised() -> None:
    enel = conv("61695227000193", dt.date(2026, 8, 1)).record
    assert enel.reh == "RESOLUÇÃO HOMOLOGATÓRIA Nº 3.596, DE 3 DE JULHO DE 2026"
    cea = next(r for r in BOOK.records if r.distributor == "CEA")
    assert cea.reh == "" and cea.tusd == 0


def test_bandeira_published_month_and_estimated_future_month() -> None:
    may = FLAGS.flag_for(dt.date(2026, 5, 20))
    assert (may.flag, may.adder_rs_mwh, may.source, may.resolution) == (
        "Amarela", Decimal("18.85"), "acionamento", "REH nº 3.306/2024")
    nov = FLAGS.flag_for(dt.date(2026, 11, 3))
    assert (nov.flag, nov.adder_rs_mwh, nov.source) == ("Amarela", Decimal("18.85"), "estimada")


def test_bandeira_adder_follows_resolution_in_force() -> None:
    assert FLAGS.adder_for("Vermelha P2", dt.date(2023, 1, 1)).adder_rs_mwh == Decimal("97.95")  # type: ignore[union-attr]
    assert FLAGS.adder_for("Vermelha P2", dt.date(2024, 4, 1)).adder_rs_mwh == Decimal("78.77")  # type: ignore[union-attr]
