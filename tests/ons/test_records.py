"""ONS files into rows, without services: every documented quirk, on the literal rows of the research notes and
on the fake's files (CSV and Parquet, every vintage)."""

from __future__ import annotations

import datetime as dt

import pytest

from backend.ons.catalog import choose_files, resources_of
from backend.ons.datasets import BALANCE, CMO, LOAD_CURVE, subsystem_code
from backend.ons.files import parse_file, sniff
from backend.ons.records import OnsFormatError, Row, local_ms, parse_number, wall_clock
from devstack.ons_fake import PACKAGES, FakeOns
from devstack.ons_files import balance_table, cmo_table, load_curve_table, to_csv, to_parquet
from devstack.ons_model import SinModel
from protocol.timebase import TZ
from tests.ons.conftest import ms

HEADER = "id_subsistema;nom_subsistema;din_instante;val_gerhidraulica;val_gertermica;val_gereolica;val_gersolar;" \
         "val_carga;val_intercambio\n"


@pytest.mark.parametrize(("cell", "value"), [
    ("0E-8", 0.0), ("2736.97290039", 2736.97290039), (" 31660.899 ", 31660.899), ("29274.58299999", 29274.58299999),
    ("-12.5", -12.5), ("12,5", 12.5), (4405.441, 4405.441), (7, 7.0), ("", None), ("   ", None), (None, None),
    (float("nan"), None)], ids=["zero-scale-8", "eight-decimals", "spaces", "literal-2018", "negative",
                                "decimal-comma", "parquet-double", "int", "empty", "blank", "null", "parquet-nan"])
def test_numbers_in_every_spelling(cell: object, value: float | None) -> None:
    assert parse_number(cell) == value


@pytest.mark.parametrize("cell", ["abc", "1.2.3", "12,5,1", True], ids=["text", "two-dots", "two-commas", "bool"])
def test_unreadable_numbers_raise_the_format_error(cell: object) -> None:
    with pytest.raises(OnsFormatError):
        parse_number(cell)


def test_times_are_brasilia_wall_clock_start_of_interval_through_zoneinfo() -> None:
    # 2026: UTC-3.
    assert local_ms(wall_clock("2026-01-01 00:00:00")) == int(dt.datetime(2026, 1, 1, 3, tzinfo=dt.UTC).timestamp()
                                                              * 1000)
    # Summer time of 2018 (UTC-2), a Parquet timestamp labelled UTC that is really the wall clock, a date-only cell.
    assert local_ms(wall_clock("2018-01-15 12:00:00")) == ms("2018-01-15T12:00") == \
        int(dt.datetime(2018, 1, 15, 14, tzinfo=dt.UTC).timestamp() * 1000)
    assert local_ms(wall_clock(dt.datetime(2018, 1, 15, 12, tzinfo=dt.UTC))) == ms("2018-01-15T12:00")
    assert local_ms(wall_clock("2026-08-28")) == ms("2026-08-28T00:00")
    # The hour skipped on 2018-11-04 never existed; the hour repeated on 2018-02-17 is its first occurrence.
    assert local_ms(wall_clock("2018-11-04 00:00:00")) is None
    assert local_ms(wall_clock("2018-02-17 23:00:00")) == int(dt.datetime(2018, 2, 18, 1, tzinfo=dt.UTC).timestamp()
                                                              * 1000)
    with pytest.raises(OnsFormatError):
        wall_clock("28/13/2026 25h")


@pytest.mark.parametrize(("ident", "name", "code"), [
    ("N  ", None, "N"), ("SE ", "SUDESTE/CENTRO-OESTE", "SE"), ("SIN", "SISTEMA INTERLIGADO NACIONAL", "SIN"),
    (None, " NORDESTE", "NE"), (None, "Sudeste/Centro-Oeste", "SE"), ("", "SUDESTE", "SE"), ("x", "SUL", "S"),
    ("SECO", None, "SE"), ("??", "Marte", None)])
def test_subsystems_from_padded_ids_and_every_spelling_of_the_names(ident: str | None, name: str | None,
                                                                     code: str | None) -> None:
    assert subsystem_code(ident, name) == code


def test_literal_rows_of_2018_dst_gap_and_2026_padding() -> None:
    csv = (HEADER
           + "SE;SUDESTE/CENTRO-OESTE;2018-11-04 00:00:00;0E-8;0E-8;0E-8;0E-8;;\n"
           + "SE;SUDESTE/CENTRO-OESTE;2018-11-04 01:00:00;29274.58299999;4405.44100000;0E-8;0E-8;;\n"
           + "N  ;NORTE;2026-01-01 00:00:00;11587.046;1864.907;263.019;0E-8;7622.606;6094.172\n"
           + "SIN;SISTEMA INTERLIGADO NACIONAL;2026-01-01 00:00:00;1;1;1;1;72695.81;1\n").encode()
    parsed = parse_file(BALANCE, csv)
    assert parsed.format == "csv" and sniff(csv) == "csv"
    assert (parsed.stats.rows, parsed.stats.kept, parsed.stats.dst_placeholders, parsed.stats.sin_rows) == (4, 2, 1, 1)
    se, n = parsed.rows
    assert se.ts_ms == ms("2018-11-04T01:00") and se.subsystem == "SE"
    assert se.values == {"hidraulica": 29274.58299999, "termica": 4405.441, "eolica": 0.0, "solar": 0.0}
    assert parsed.stats.empty_values == 2  # load and interchange empty: absent, never zero
    assert n.subsystem == "N" and n.values["carga"] == 7622.606 and n.values["intercambio"] == 6094.172


def test_renamed_and_reordered_columns_are_matched_by_name_and_unknown_headers_refused() -> None:
    csv = b"din_instante;id_subsistema;nom_subsistema;val_gerfotovoltaica;val_extra\n2009-06-01 12:00:00;NE;NE;5;9\n"
    (row,) = parse_file(BALANCE, csv).rows
    assert row.values == {"solar": 5.0} and row.subsystem == "NE"
    with pytest.raises(OnsFormatError, match="cabeçalho inesperado"):
        parse_file(BALANCE, b"a;b;c\n1;2;3\n")
    bad = parse_file(CMO, b"id_subsistema;nom_subsistema;din_instante;val_cmo\nXX;MARTE;2024-01-01 00:00:00;1\n"
                          b"SE;SUDESTE;2024-01-01 00:30:00;abc\nS;SUL;2024-01-01 00:30:00;10.5\n")
    assert bad.stats.bad == 2 and len(bad.rows) == 1 and bad.stats.errors[0].startswith("linha 1")


def flat(rows: list[Row]) -> dict[tuple[int, str, str], float]:
    return {(r.ts_ms, r.subsystem, k): v for r in rows for k, v in r.values.items()}


@pytest.mark.parametrize("year", [2009, 2018, 2026])
def test_balance_files_csv_and_parquet_give_the_same_rows_and_never_the_sin_row(year: int) -> None:
    model = SinModel(1)
    table = balance_table(model, year, dt.date(year, 3, 31) if year == 2026 else dt.date(year, 12, 31))
    from_csv = parse_file(BALANCE, to_csv("balanco", year, table))
    from_parquet = parse_file(BALANCE, to_parquet("balanco", year, table))
    assert from_parquet.format == "parquet"
    assert flat(from_csv.rows) == pytest.approx(flat(from_parquet.rows), abs=1e-8)
    assert {r.subsystem for r in from_csv.rows} == {"SE", "S", "NE", "N"}
    hours = len({r.ts_ms for r in from_csv.rows})
    assert from_csv.stats.sin_rows == hours + from_csv.stats.dst_placeholders // 4  # SIN placeholder counts as SIN
    assert len(from_csv.rows) == 4 * hours
    if year in (2009, 2018):  # one skipped hour in October/November: a placeholder row per subsystem, none kept
        assert from_csv.stats.dst_placeholders == 4 and hours == 365 * 24 - 1


def test_load_curve_text_and_float_vintages_empty_values_and_renamed_sudeste() -> None:
    model = SinModel(1)
    for year, kind in ((2014, "float"), (2020, "text"), (2026, "float")):
        table = load_curve_table(model, year, dt.date(year, 12, 31) if year < 2026 else dt.date(2026, 2, 1))
        data = to_parquet("carga", year, table)
        parsed = parse_file(LOAD_CURVE, data)
        assert parsed.stats.bad == 0 and {r.subsystem for r in parsed.rows} == {"SE", "S", "NE", "N"}
        assert parse_file(LOAD_CURVE, to_csv("carga", year, table)).rows == parsed.rows or kind == "float"
    literal = parse_file(LOAD_CURVE, to_csv("carga", 2014, load_curve_table(model, 2014, dt.date(2014, 10, 19))))
    at = {(r.ts_ms, r.subsystem): r.values["carga"] for r in literal.rows}
    assert at[(ms("2014-10-19T01:00"), "SE")] == 31660.899
    assert literal.stats.dst_placeholders == 4  # N;NORTE;2014-10-19 00:00:00; and its three siblings


def test_cmo_half_hours_negative_values_missing_days_and_leading_spaces() -> None:
    model = SinModel(1)
    data = to_csv("cmo", 2026, cmo_table(model, 2026, dt.date(2026, 8, 26)))
    assert b"SE; SUDESTE;2026-01-01 00:30:00;" in data
    parsed = parse_file(CMO, data)
    days = {dt.datetime.fromtimestamp(r.ts_ms / 1000, TZ).date() for r in parsed.rows}
    assert parsed.stats.bad == 0 and len(parsed.rows) % 4 == 0
    assert {r.subsystem for r in parsed.rows} == {"SE", "S", "NE", "N"}
    assert any(r.values["cmo"] < 0 for r in parsed.rows if r.subsystem == "NE")
    missing = {d for d in model.missing_cmo_days(2026) if d <= dt.date(2026, 8, 26)}
    assert missing and len(days) == 238 - len(missing) and not days & missing  # a few days have no rows
    assert len(parsed.rows) == 48 * 4 * len(days)


def test_catalog_picks_one_file_per_year_from_eighty_resources() -> None:
    fake = FakeOns(until=dt.date(2026, 8, 26))
    pkg = next(p for p in PACKAGES if p.key == "balanco")
    raw = fake.package_dict(pkg.slug, pkg)
    resources = resources_of(raw)
    assert len(resources) == 27 * 3 + 4  # 3 formats a year, the duplicate, 2 dictionaries, a stray test resource
    files = choose_files(BALANCE, resources, first_year=2000)
    assert [f.year for f in files] == list(range(2000, 2027)) and {f.format for f in files} == {"parquet"}
    assert files[-1].key == "dataset/balanco_energia_subsistema_ho/BALANCO_ENERGIA_SUBSISTEMA_2026.parquet"
    assert files[0].modified.startswith("2018-05-02")  # last_modified null before 2012: created instead
    csv = choose_files(BALANCE, resources, first_year=2025, prefer="csv")
    assert [(f.year, f.format) for f in csv] == [(2025, "csv"), (2026, "csv")]
    cmo_pkg = next(p for p in PACKAGES if p.key == "cmo")
    cmo = choose_files(CMO, resources_of(fake.package_dict(cmo_pkg.slug, cmo_pkg)), first_year=2000)
    assert [(f.year, f.format) for f in cmo] == [(2020, "csv"), (2021, "csv"), (2022, "csv"), (2023, "csv"),
                                                  (2024, "parquet"), (2025, "parquet"), (2026, "parquet")]
