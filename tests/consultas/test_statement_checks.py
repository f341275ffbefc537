"""The console's statement checks (backend/store/console.py), without InfluxDB: what is accepted, what is refused
and why, the time range read from WHERE, and the lexer's corners."""

from __future__ import annotations

import datetime as dt

import pytest

from backend.settings import Settings
from backend.store.console import Checked, check_statement
from backend.store.influxql import StatementRefused, parse_duration, parse_time_string, tokenize
from backend.store.layout import AGGREGATED_RPS

NOW = 1_790_000_000 * 10**9
H = 3600 * 10**9
D = 24 * H


def check(q: str, max_days: int = 7) -> Checked:
    return check_statement(q, now_ns=NOW, max_raw_range_ns=max_days * D, uncapped_rps=AGGREGATED_RPS)


def refused(q: str) -> str:
    with pytest.raises(StatementRefused) as exc:
        check(q)
    return exc.value.detail


@pytest.mark.parametrize(("q", "span"), [
    ("SELECT * FROM readings WHERE time > now() - 1h", H),
    ("select * from readings where time >= now() - 1h and time <= now()", H),
    ("SELECT mean(p) FROM \"cds\".\"raw\".\"readings\" WHERE device = 'a' AND time >= '2026-01-01T00:00:00Z' "
     "AND time < '2026-01-03' GROUP BY time(1h) fill(none) ORDER BY time DESC LIMIT 10 tz('America/Sao_Paulo')",
     2 * D),
    ("SELECT * FROM cds..readings WHERE time > 1700000000000000000 AND time < 1700000000000000000 + 2d", 2 * D),
    ("SELECT * FROM /read.*/ WHERE time > now() - 1d", D),
    ("SELECT * FROM readings WHERE time >= now() - 7d", 7 * D),
    ("SELECT * FROM readings WHERE time >= now() - 1h30m", H + H // 2),
    ("SELECT * FROM readings WHERE (time > now() - 1h AND device = 'a') OR (time > now() - 2h AND device = 'b')",
     2 * H),
    ("SELECT * FROM readings WHERE now() - 1h < time", H),
    ("SELECT * FROM readings WHERE time = '2026-01-01T00:00:00-03:00'", 0),
    ("SELECT max(c) FROM (SELECT count(p) AS c FROM readings WHERE time > now() - 1d GROUP BY time(1m))", D),
    ("SELECT max(c) FROM (SELECT count(p) AS c FROM readings GROUP BY time(1m)) WHERE time > now() - 2d", 2 * D),
    ("SELECT * FROM readings, r1h.readings WHERE time > now() - 1h", H),
    ("SELECT p / 2, \"p\"::float * 3 FROM readings WHERE time > now() - 1h AND p > 1 / 2", H),
    ("SELECT * FROM readings WHERE device =~ /a\\/b/ AND time > now() - 1h", H),
    ("SELECT * FROM readings WHERE device = 'it\\'s; DROP DATABASE cds' AND time > now() - 1h", H),
    ("SELECT \"into\" FROM readings WHERE time > now() - 1h", H),
    ("SELECT * FROM readings WHERE time > now() - 1h;", H),
])
def test_accepted_selects_and_the_raw_range_they_read(q: str, span: int) -> None:
    checked = check(q)
    assert checked.kind == "SELECT"
    assert checked.raw_range_ns is not None
    lo, hi = checked.raw_range_ns
    assert abs((hi - lo) - span) <= 2, (hi - lo, span)
    assert not checked.text.endswith(";")


@pytest.mark.parametrize("q", [
    "SELECT * FROM r1h.readings",
    "SELECT * FROM cds.r1m.readings WHERE device =~ /^a/",
    "SELECT * FROM aneel.aneel_tarifa",
    "SELECT * FROM \"cds\".\"ons\".\"ons_balanco\"",
    "SELECT max(c) FROM (SELECT count(mwh) AS c FROM r1h.energy_d GROUP BY time(1d))",
])
def test_aggregated_policies_are_not_time_capped(q: str) -> None:
    assert check(q).raw_range_ns is None


@pytest.mark.parametrize("q", [
    "SHOW DATABASES", "show measurements", "SHOW MEASUREMENTS WITH MEASUREMENT =~ /read/", "SHOW RETENTION POLICIES",
    "SHOW RETENTION POLICIES ON cds", "SHOW SERIES FROM readings", "SHOW SERIES CARDINALITY", "SHOW TAG KEYS",
    "SHOW TAG VALUES WITH KEY = device", "SHOW TAG VALUES FROM /read/ WITH KEY IN (site, device)",
    "SHOW FIELD KEYS FROM readings", "SHOW MEASUREMENT EXACT CARDINALITY", "SHOW TAG KEY CARDINALITY",
    "SHOW FIELD KEY CARDINALITY",
])
def test_accepted_shows(q: str) -> None:
    assert check(q).kind == "SHOW"


@pytest.mark.parametrize(("q", "reason"), [
    ("DROP DATABASE cds", "'DROP' foi recusado"),
    ("  delete FROM readings", "'DELETE' foi recusado"),
    ("EXPLAIN SELECT * FROM readings", "'EXPLAIN' foi recusado"),
    ("(SELECT 1)", "'(' foi recusado"),
    ("SELECT * INTO copy FROM readings WHERE time > now() - 1h", "SELECT ... INTO grava dados"),
    ("select * into \"cds\".\"raw\".\"x\" from readings where time > now() - 1h", "INTO grava dados"),
    ("SELECT * FROM readings WHERE time > now() - 1h; SELECT 1", "uma única consulta"),
    ("SELECT * FROM readings WHERE time > now() - 1h;;", "uma única consulta"),
    ("SELECT * FROM readings", "precisam de um início de período"),
    ("SELECT * FROM readings WHERE time < now()", "precisam de um início de período"),
    ("SELECT * FROM readings WHERE device = 'a'", "precisam de um início de período"),
    ("SELECT * FROM readings WHERE time > now() - 1h OR device = 'a'", "precisam de um início de período"),
    ("SELECT * FROM readings WHERE time > now() - 8d", "(8 dias) passa do máximo de 7 dias"),
    ("SELECT * FROM readings WHERE time >= now() - 7d1s", "(7 dias 1 s) passa do máximo de 7 dias"),
    ("SELECT * FROM readings WHERE time > now() - 1h OR time > '2020-01-01'", "passa do máximo"),
    ("SELECT * FROM autogen.readings WHERE time > now() - 30d", "passa do máximo"),
    ("SELECT * FROM r1h.readings, raw.readings", "precisam de um início de período"),
    ("SELECT max(c) FROM (SELECT count(p) AS c FROM readings GROUP BY time(1m))", "início de período"),
    ("SELECT max(c) FROM (SELECT count(p) AS c FROM readings WHERE time > now() - 1d GROUP BY time(1m)) "
     "WHERE time > now() - 30d", None),  # intersection: the inner 1 day wins -> accepted
    ("SELECT * FROM readings WHERE time > p", "Condição de tempo não reconhecida"),
    ("SELECT * FROM readings WHERE time > 'ontem'", "Condição de tempo não reconhecida"),
    ("SELECT * FROM readings WHERE time + 1h > now()", "Condição de tempo não reconhecida"),
    ("SELECT * FROM readings WHERE time > $start", "Parâmetros ($nome) não são aceitos"),
    ("SELECT * FROM readings WHERE time > now() - 1h -- comentário", "Comentários"),
    ("SELECT * FROM readings /* x */ WHERE time > now() - 1h", "Comentários"),
    ("SELECT * FROM readings WHERE device = 'a", "não fechado"),
    ("SELECT * FROM \"readings WHERE time > now()", "não fechado"),
    ("SELECT * FROM /read WHERE time > now()", "expressão regular não fechada"),
    ("SELECT * FROM readings WHERE time > now() - 1h AND p > 1 @ 2", "caractere '@' inesperado"),
    ("SELECT * FROM readings WHERE time > now() - 1h WHERE p > 1", "Consulta inválida perto de 'WHERE'"),
    ("SELECT *", "terminou antes do esperado"),
    ("SHOW USERS", "SHOW USERS não é aceito"),
    ("SHOW GRANTS FOR ro", "não é aceito"),
    ("SHOW SHARDS", "não é aceito"),
    ("SHOW SHARD GROUPS", "não é aceito"),
    ("SHOW QUERIES", "não é aceito"),
    ("SHOW STATS", "não é aceito"),
    ("SHOW DIAGNOSTICS", "não é aceito"),
    ("SHOW SUBSCRIPTIONS", "não é aceito"),
    ("SHOW CONTINUOUS QUERIES", "não é aceito"),
    ("SHOW", "não é aceito"),
    ("from(bucket: \"cds\") |> range(start: -1h)", "Flux não é aceito"),
    ("", "Informe a consulta"),
    (" ; ", "Informe a consulta"),
    ("SELECT * FROM readings WHERE time > now() - 1h AND device = '" + "x" * 10_000 + "'", "o máximo é 10000"),
], ids=lambda v: (v or "")[:50])
def test_refused_with_a_reason(q: str, reason: str | None) -> None:
    if reason is None:
        check(q)
        return
    assert reason in refused(q)


def test_every_refusal_is_a_400_in_portuguese() -> None:
    exc = StatementRefused("x")
    assert exc.status_code == 400


def test_lexer_tells_regex_from_division() -> None:
    kinds = [t.kind for t in tokenize("SELECT a / b FROM /m/ WHERE x =~ /y/ AND z / 2 > 1")]
    assert kinds.count("regex") == 2
    assert [t.text for t in tokenize("SELECT * FROM (SELECT a FROM m WHERE time > 0), /re/")][-1] == "/re/"


def test_strings_and_quoted_identifiers_hide_keywords_and_semicolons() -> None:
    tokens = tokenize("SELECT \"a;b\", 'INTO; DROP' FROM \"my \\\"m\\\"\"")
    assert [t.kind for t in tokens] == ["ident", "qident", "op", "string", "ident", "qident"]
    assert tokens[-1].value == 'my "m"'
    assert tokens[3].value == "INTO; DROP"


def test_time_literals() -> None:
    assert parse_duration("1h30m") == 90 * 60 * 10**9
    assert parse_duration("15m") == 15 * 60 * 10**9
    assert parse_duration("100ms") == 10**8
    assert parse_duration("1w") == 7 * D
    epoch = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    assert parse_time_string("2026-01-01") == int(epoch) * 10**9
    assert parse_time_string("2026-01-01T00:00:00Z") == int(epoch) * 10**9
    assert parse_time_string("2026-01-01 00:00:00.5") == int(epoch) * 10**9 + 500_000_000
    assert parse_time_string("2026-01-01T00:00:00-03:00") == int(epoch + 3 * 3600) * 10**9
    assert parse_time_string("ontem") is None
    assert parse_time_string("2026-13-01") is None


def test_settings_of_the_console(tmp_path: object) -> None:
    from pathlib import Path

    from backend.errors import ConfigError

    secret = Path(str(tmp_path)) / "ro"
    secret.write_text("s3cret\n", encoding="utf-8")
    s = Settings.from_env({"BACKEND_INFLUX_READONLY_USERNAME": "cds_console",
                           "BACKEND_INFLUX_READONLY_PASSWORD_FILE": str(secret)})
    assert (s.influx_readonly_username, s.influx_readonly_password) == ("cds_console", "s3cret")
    assert (s.influxql_max_rows, s.influxql_max_raw_range_s, s.influxql_timeout_s) == (10000, 7 * 86400, 10.0)
    for env in ({"BACKEND_INFLUX_READONLY_USERNAME": "cds_console"},
                {"BACKEND_INFLUX_READONLY_PASSWORD": "x"},
                {"BACKEND_INFLUX_READONLY_USERNAME": "admin", "BACKEND_INFLUX_READONLY_PASSWORD": "x",
                 "BACKEND_INFLUX_USERNAME": "admin"},
                {"BACKEND_INFLUX_READONLY_USERNAME": "a b", "BACKEND_INFLUX_READONLY_PASSWORD": "x"},
                {"BACKEND_INFLUXQL_MAX_ROWS": "0"}, {"BACKEND_INFLUXQL_TIMEOUT_S": "0"}):
        with pytest.raises(ConfigError):
            Settings.from_env(env)
