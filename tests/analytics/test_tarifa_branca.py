"""Tarifa Branca postos (weekdays, weekends, national holidays, :30 windows) and the sites file."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from backend.aneel.postos import KNOWN_WINDOWS, holiday_name, posto_at, split_by_posto, windows_for
from backend.aneel.sites import SiteConfigError, parse_sites

SP = ZoneInfo("America/Sao_Paulo")
CEMIG = KNOWN_WINDOWS["CEMIG-D"]
ENEL = KNOWN_WINDOWS["ELETROPAULO"]


def at(y: int, m: int, d: int, h: int, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, h, mi, tzinfo=SP)


@pytest.mark.parametrize(("when", "posto"), [
    (at(2026, 5, 4, 15, 59), "Fora ponta"), (at(2026, 5, 4, 16, 0), "Intermediário"),
    (at(2026, 5, 4, 17, 0), "Ponta"), (at(2026, 5, 4, 19, 59), "Ponta"), (at(2026, 5, 4, 20, 0), "Intermediário"),
    (at(2026, 5, 4, 21, 0), "Fora ponta"),
    (at(2026, 5, 9, 18, 0), "Fora ponta"),  # Saturday
    (at(2026, 5, 10, 18, 0), "Fora ponta"),  # Sunday
    (at(2026, 4, 3, 18, 0), "Fora ponta"),  # Sexta-feira Santa (Good Friday)
    (at(2026, 11, 20, 18, 0), "Fora ponta"),  # Consciência Negra (national since 2024)
    (at(2026, 2, 17, 18, 0), "Ponta"),  # Carnival Tuesday is not a national public holiday
])
def test_cemig_postos(when: dt.datetime, posto: str) -> None:
    assert posto_at(when, CEMIG) == posto


def test_enel_half_hour_windows() -> None:
    assert posto_at(at(2026, 5, 4, 17, 29), ENEL) == "Intermediário"
    assert posto_at(at(2026, 5, 4, 17, 30), ENEL) == "Ponta"
    assert posto_at(at(2026, 5, 4, 20, 30), ENEL) == "Intermediário"
    assert windows_for("", "61695227000193") is ENEL


def test_holiday_names_in_portuguese() -> None:
    assert holiday_name(dt.date(2026, 4, 21)) == "Tiradentes"
    assert holiday_name(dt.date(2026, 4, 22)) is None


def test_hour_bucket_split_over_half_hour_boundary() -> None:
    """Enel SP 17:00-18:00 on a Monday: 17:00-17:30 intermediário, 17:30-18:00 ponta -> 1 kWh splits 0,5/0,5."""
    t = int(at(2026, 5, 4, 17).timestamp() * 1000)
    split = split_by_posto([(t, t + 3_600_000, 1.0)], ENEL)
    assert split.kwh == {"Ponta": 0.5, "Intermediário": 0.5, "Fora ponta": 0.0}
    assert split.by_hour[17]["Ponta"] == 0.5 and split.slices == 4


def test_unknown_distributor_needs_configured_windows() -> None:
    with pytest.raises(KeyError):
        windows_for("DIST-DESCONHECIDA")
    site = parse_sites('[[site]]\nid = "x"\ndistributor = "DIST-DESCONHECIDA"\nponta = ["18:00", "21:00"]\n'
                       'intermediario = [["17:00", "18:00"], ["21:00", "22:00"]]\n')["x"]
    assert posto_at(at(2026, 5, 4, 18), site.windows()) == "Ponta"


def test_sites_file_parses_rates_exactly_and_rejects_bad_values() -> None:
    s = parse_sites('[[site]]\nid = "a"\ndistributor = "CEMIG-D"\nicms = 0.18\npis = "0.0101"\ncofins = 0.0468\n')["a"]
    assert (s.icms, s.pis, s.cofins) == (Decimal("0.18"), Decimal("0.0101"), Decimal("0.0468"))
    for bad in ('icms = "1.5"', 'billing_day = 31', 'phases = 4', 'subgroup = "A4"', 'modality = "Azul"'):
        with pytest.raises(SiteConfigError):
            parse_sites(f'[[site]]\nid = "a"\ndistributor = "X"\n{bad}\n')
    with pytest.raises(SiteConfigError):
        parse_sites('[[site]]\nid = "a"\ndistributor = "X"\n[[site]]\nid = "a"\ndistributor = "Y"\n')
    with pytest.raises(SiteConfigError):
        parse_sites("not toml [")


def test_billing_cycles() -> None:
    s = parse_sites('[[site]]\nid = "a"\ndistributor = "X"\nbilling_day = 10\n')["a"]
    assert s.cycle_for(dt.date(2026, 1, 5)) == (dt.date(2025, 12, 11), dt.date(2026, 1, 10))
    assert s.cycle_for(dt.date(2026, 1, 10)) == (dt.date(2025, 12, 11), dt.date(2026, 1, 10))
    assert s.cycle_for(dt.date(2026, 1, 11)) == (dt.date(2026, 1, 11), dt.date(2026, 2, 10))
    cal = parse_sites('[[site]]\nid = "a"\ndistributor = "X"\n')["a"]
    assert cal.cycle_for(dt.date(2026, 2, 14)) == (dt.date(2026, 2, 1), dt.date(2026, 2, 28))
