"""The admin's InfluxQL console: which statements it accepts, checked before they reach InfluxDB (no I/O).

``POST /api/v1/consultas/influxql`` runs what an administrator types, through an InfluxDB user that may only
READ the backend's database (``backend/store/readonly.py``). These checks are the first line, not the only one:
they give a clear pt-BR refusal for what the console does not do, and keep a statement from reading months of
raw readings by accident. Whatever slips past them is still refused by InfluxDB itself, because the user has no
other privilege (tests/consultas/ proves it; the one gap of InfluxDB 1.x, continuous queries, is described in
readonly.py).

Accepted: exactly one ``SELECT`` or ``SHOW`` statement (a trailing ``;`` is fine), where

- a ``SELECT`` has no ``INTO`` (that writes) and no bound parameters (``$x``: nothing to bind them to);
- every ``SELECT`` that reads raw data has a time range of at most ``max_raw_range_ns``: a lower bound is
  required, a missing upper bound means now. Raw is anything but the aggregated retention policies passed as
  ``uncapped_rps`` (the rollups ``r1m``, ``r1h``, the ``marks``, ``aneel`` and ``ons`` policies): the default policy
  (``raw``, so also a bare ``FROM readings`` or ``FROM /regex/``), ``raw`` itself and any policy not known to be
  small. A subquery inherits the outer query's time range (InfluxDB applies the outer condition to it);
- a ``SHOW`` is one of the schema-exploration kinds in :data:`SHOW_KINDS` (no users, grants, shards, queries,
  stats or diagnostics);
- no comments (they could hide text from a reader of the log, and the two scanners need not agree on them).

The time range is read from the ``WHERE`` clause: comparisons of ``time`` with RFC 3339 or date strings, integer
nanoseconds, ``now()`` and duration arithmetic (``now() - 7d``), combined with ``AND`` (intersection) and ``OR``
(their hull). Anything else compared with ``time`` is refused rather than guessed.

The tokens come from ``influxql.py``, a lexer that follows InfluxDB's own scanner.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from backend.store.influxql import (
    StatementRefused,
    Token,
    parse_duration,
    parse_time_string,
    tokenize,
)

MAX_STATEMENT_CHARS: Final = 10_000
SHOW_KINDS: Final = (
    ("DATABASES",), ("MEASUREMENTS",), ("MEASUREMENT",), ("RETENTION", "POLICIES"), ("SERIES",),
    ("TAG", "KEYS"), ("TAG", "VALUES"), ("TAG", "KEY"), ("FIELD", "KEYS"), ("FIELD", "KEY"),
)
"""``SHOW`` statements the console runs (``SHOW MEASUREMENT``/``TAG KEY``/``FIELD KEY`` start the
``... CARDINALITY`` forms)."""

@dataclass(frozen=True)
class Checked:
    """A statement the console accepts."""

    text: str
    """The statement as InfluxDB will receive it (trailing ``;`` and surrounding blanks removed)."""
    kind: Literal["SELECT", "SHOW"]
    raw_range_ns: tuple[int, int] | None = None
    """The widest time range read from raw data (nanoseconds since the epoch), None when none is read."""


# --- statements -----------------------------------------------------------------------------------------


def split_statement(text: str, tokens: list[Token]) -> tuple[str, list[Token]]:
    """The single statement's text (without a trailing ``;``) and tokens; StatementRefused when there are
    several."""
    for k, tok in enumerate(tokens):
        if tok.kind == "op" and tok.text == ";":
            if k + 1 < len(tokens):
                raise StatementRefused("Envie uma única consulta por vez (foram encontradas várias, separadas "
                                       "por ';').")
            return text[:tok.pos].strip(), tokens[:k]
    return text.strip(), tokens


def check_statement(text: str, *, now_ns: int, max_raw_range_ns: int, uncapped_rps: frozenset[str]) -> Checked:
    """Accept one read-only statement (see the module doc) or raise StatementRefused with a pt-BR reason.

    ``uncapped_rps``: retention policies of aggregated data, read without a time-range cap; every other source
    (the default policy, ``raw``, any other) is capped at ``max_raw_range_ns``.
    """
    if not text.strip():
        raise StatementRefused("Informe a consulta InfluxQL no campo 'consulta'.")
    if len(text) > MAX_STATEMENT_CHARS:
        raise StatementRefused(f"A consulta tem {len(text)} caracteres; o máximo é {MAX_STATEMENT_CHARS}.")
    if "|>" in text:
        raise StatementRefused("Flux não é aceito: o InfluxDB 1.x não oferece Flux. Escreva a consulta em InfluxQL "
                               "(SELECT ... FROM ... WHERE time >= now() - 1h).")
    statement, tokens = split_statement(text, tokenize(text))
    if not tokens:
        raise StatementRefused("Informe a consulta InfluxQL no campo 'consulta'.")
    first = tokens[0]
    if first.is_kw("SHOW"):
        _check_show(tokens)
        return Checked(text=statement, kind="SHOW")
    if not first.is_kw("SELECT"):
        word = first.text.upper() if first.kind == "ident" else first.text
        raise StatementRefused(f"Só consultas SELECT ou SHOW são aceitas no console; '{word}' foi recusado.")
    for tok in tokens:
        if tok.is_kw("INTO"):
            raise StatementRefused("SELECT ... INTO grava dados e não é aceito no console (somente leitura).")
    parser = _Parser(tokens, now_ns)
    select = parser.select()
    parser.expect_end()
    ranges = list(_raw_ranges(select, _FULL, uncapped_rps))
    widest: tuple[int, int] | None = None
    for lo, hi in ranges:
        if lo is None:
            raise StatementRefused(
                "Consultas SELECT em dados brutos precisam de um início de período, por exemplo "
                f"WHERE time >= now() - 1h (no máximo {_span(max_raw_range_ns)}); para períodos longos use "
                "as agregações r1m ou r1h.")
        end = now_ns if hi is None else hi
        if end - lo > max_raw_range_ns:
            raise StatementRefused(
                f"O período pedido em dados brutos ({_span(end - lo)}) passa do máximo de "
                f"{_span(max_raw_range_ns)}; reduza o período ou use as agregações r1m ou r1h.")
        widest = (lo, end) if widest is None else (min(widest[0], lo), max(widest[1], end))
    return Checked(text=statement, kind="SELECT", raw_range_ns=widest)


def _span(ns: int) -> str:
    """A duration in pt-BR words: ``7 dias``, ``1 dia 2 h 30 min``, ``45 s``."""
    seconds = (max(0, ns) + 500_000_000) // 1_000_000_000  # exclusive bounds are a nanosecond off
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} dia{'s' if days != 1 else ''}" if days else "", f"{hours} h" if hours else "",
             f"{minutes} min" if minutes else "", f"{secs} s" if secs else ""]
    return " ".join(p for p in parts if p) or "0 s"


def _check_show(tokens: list[Token]) -> None:
    words = [t.upper for t in tokens[1:3] if t.kind == "ident"]
    for kind in SHOW_KINDS:
        if tuple(words[:len(kind)]) == kind:
            return
    what = " ".join(words[:2]) or (tokens[1].text if len(tokens) > 1 else "")
    allowed = ", ".join(" ".join(k) for k in SHOW_KINDS if k[-1] not in ("MEASUREMENT", "KEY"))
    raise StatementRefused(f"SHOW {what} não é aceito no console; são aceitos: SHOW {allowed} (e as formas "
                           "... CARDINALITY).")


# --- SELECT structure and time ranges -------------------------------------------------------------------

Bound = int | None
_FULL: Final[tuple[Bound, Bound]] = (None, None)


@dataclass
class _Source:
    rp: str | None = None
    """Retention policy named in the source (None = the database's default one)."""
    subquery: _Select | None = None


@dataclass
class _Select:
    sources: list[_Source] = field(default_factory=list)
    where: tuple[Bound, Bound] = _FULL


@dataclass
class _Expr:
    """A WHERE expression reduced to what the checks need."""

    kind: Literal["time", "value", "other", "cond"]
    value: int | None = None
    """ns since the epoch (``value``) or a duration (``value`` with ``is_duration``)."""
    is_duration: bool = False
    range: tuple[Bound, Bound] = _FULL
    """For ``cond``: the time range it implies."""


class _Parser:
    """Recursive descent over one SELECT: sources (with subqueries) and the WHERE clause's time range."""

    def __init__(self, tokens: list[Token], now_ns: int) -> None:
        self.t = tokens
        self.i = 0
        self.now_ns = now_ns

    def peek(self) -> Token | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def next(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise StatementRefused("Consulta inválida: terminou antes do esperado.")
        self.i += 1
        return tok

    def at_op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "op" and tok.text in ops

    def expect_end(self) -> None:
        tok = self.peek()
        if tok is not None:
            raise StatementRefused(f"Consulta inválida perto de '{tok.text}' (posição {tok.pos + 1}).")

    def select(self) -> _Select:
        tok = self.next()
        if not tok.is_kw("SELECT"):
            raise StatementRefused(f"Consulta inválida: esperado SELECT na posição {tok.pos + 1}.")
        depth = 0
        while True:  # the field list: skip to FROM at this level
            tok = self.next()
            if tok.kind == "op" and tok.text == "(":
                depth += 1
            elif tok.kind == "op" and tok.text == ")":
                depth -= 1
            elif depth == 0 and tok.is_kw("FROM"):
                break
        sel = _Select()
        while True:
            sel.sources.append(self.source())
            if not self.at_op(","):
                break
            self.next()
        where = self.peek()
        if where is not None and where.is_kw("WHERE"):
            self.next()
            sel.where = self.condition(self.expr(0))
        depth = 0
        while (rest := self.peek()) is not None:  # GROUP BY, ORDER BY, LIMIT, fill(), tz(): nothing to check
            if rest.kind == "op" and rest.text == ")" and depth == 0:
                break
            if rest.kind == "op" and rest.text == "(":
                depth += 1
            elif rest.kind == "op" and rest.text == ")":
                depth -= 1
            elif depth == 0 and rest.is_kw("WHERE", "FROM", "SELECT"):
                raise StatementRefused(f"Consulta inválida perto de '{rest.text}' (posição {rest.pos + 1}).")
            self.next()
        return sel

    def source(self) -> _Source:
        if self.at_op("("):
            self.next()
            sub = self.select()
            if not self.at_op(")"):
                raise StatementRefused("Consulta inválida: subconsulta sem ')'.")
            self.next()
            return _Source(subquery=sub)
        parts: list[str | None] = []
        current: str | None = None
        while True:
            tok = self.next()
            if tok.kind in ("ident", "qident", "regex"):
                current = tok.value if tok.kind != "regex" else "/regex/"
            elif tok.kind == "op" and tok.text == ".":
                parts.append(current)
                current = None
                continue
            else:
                raise StatementRefused(f"Consulta inválida: medição esperada na posição {tok.pos + 1}.")
            if not self.at_op("."):
                parts.append(current)
                break
        if len(parts) > 3:
            raise StatementRefused("Consulta inválida: use banco.política.medição no FROM.")
        rp = parts[-2] if len(parts) >= 2 else None
        return _Source(rp=rp or None)

    # expressions: precedence climbing over InfluxQL's operator levels
    _PREC: Final = {"OR": 1, "AND": 2, "=": 3, "!=": 3, "<>": 3, "<": 3, "<=": 3, ">": 3, ">=": 3, "=~": 3,
                    "!~": 3, "+": 4, "-": 4, "|": 4, "^": 4, "*": 5, "/": 5, "%": 5, "&": 5}

    def _binop(self) -> str | None:
        tok = self.peek()
        if tok is None:
            return None
        if tok.kind == "ident" and tok.upper in ("AND", "OR"):
            return tok.upper
        if tok.kind == "op" and tok.text in self._PREC:
            return tok.text
        return None

    def expr(self, min_prec: int) -> _Expr:
        left = self.unary()
        while (op := self._binop()) is not None and self._PREC[op] > min_prec:
            self.next()
            right = self.expr(self._PREC[op])
            left = self.combine(op, left, right)
        return left

    def unary(self) -> _Expr:
        tok = self.next()
        if tok.kind == "op" and tok.text == "(":
            inner = self.expr(0)
            if not self.at_op(")"):
                raise StatementRefused("Consulta inválida: parêntese sem ')' no WHERE.")
            self.next()
            return inner
        if tok.kind == "op" and tok.text in ("-", "+"):
            inner = self.unary()
            if tok.text == "-" and inner.kind == "value" and inner.value is not None:
                return _Expr("value", -inner.value, inner.is_duration)
            return inner
        if tok.kind in ("ident", "qident"):
            if tok.kind == "ident" and self.at_op("("):  # a call: now() or another function
                self.next()
                depth = 1
                while depth:
                    t = self.next()
                    depth += 1 if t.text == "(" else -1 if t.text == ")" else 0
                if tok.upper == "NOW":
                    return _Expr("value", self.now_ns)
                return _Expr("other")
            if self.at_op("::"):
                self.next()
                self.next()
            if tok.value.lower() == "time":
                return _Expr("time")
            return _Expr("other")
        if tok.kind == "duration":
            return _Expr("value", parse_duration(tok.text), is_duration=True)
        if tok.kind == "integer":
            return _Expr("value", int(tok.text))
        if tok.kind == "string":
            ns = parse_time_string(tok.value)
            return _Expr("value", ns) if ns is not None else _Expr("other")
        return _Expr("other")

    def combine(self, op: str, left: _Expr, right: _Expr) -> _Expr:
        if op in ("AND", "OR"):
            lr, rr = self.condition(left), self.condition(right)
            return _Expr("cond", range=_intersect(lr, rr) if op == "AND" else _hull(lr, rr))
        if op in ("+", "-"):
            if left.kind == "value" and right.kind == "value" and left.value is not None and right.value is not None:
                value = left.value + right.value if op == "+" else left.value - right.value
                return _Expr("value", value, left.is_duration and right.is_duration)
            if "time" in (left.kind, right.kind):
                raise StatementRefused("Condição de tempo não reconhecida: use time com datas, now() e durações "
                                       "(ex.: time >= now() - 1h).")
            return _Expr("other")
        if op in ("=", "!=", "<>", "<", "<=", ">", ">="):
            if left.kind == "time" or right.kind == "time":
                return _Expr("cond", range=self.time_comparison(op, left, right))
            return _Expr("cond")
        if "time" in (left.kind, right.kind):
            raise StatementRefused("Condição de tempo não reconhecida: use time com datas, now() e durações "
                                   "(ex.: time >= now() - 1h).")
        return _Expr("cond" if op in ("=~", "!~") else "other")

    @staticmethod
    def condition(e: _Expr) -> tuple[Bound, Bound]:
        return e.range if e.kind == "cond" else _FULL

    @staticmethod
    def time_comparison(op: str, left: _Expr, right: _Expr) -> tuple[Bound, Bound]:
        flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!=", "<>": "<>"}
        if right.kind == "time":
            left, right, op = right, left, flip[op]
        if left.kind != "time" or right.kind != "value" or right.value is None:
            raise StatementRefused("Condição de tempo não reconhecida: compare time com uma data "
                                   "('2026-05-01T00:00:00Z'), now() ou now() - duração.")
        v = right.value
        return {">": (v + 1, None), ">=": (v, None), "<": (None, v - 1), "<=": (None, v), "=": (v, v)}.get(op, _FULL)


def _intersect(a: tuple[Bound, Bound], b: tuple[Bound, Bound]) -> tuple[Bound, Bound]:
    lo = a[0] if b[0] is None else b[0] if a[0] is None else max(a[0], b[0])
    hi = a[1] if b[1] is None else b[1] if a[1] is None else min(a[1], b[1])
    return lo, hi


def _hull(a: tuple[Bound, Bound], b: tuple[Bound, Bound]) -> tuple[Bound, Bound]:
    lo = None if a[0] is None or b[0] is None else min(a[0], b[0])
    hi = None if a[1] is None or b[1] is None else max(a[1], b[1])
    return lo, hi


def _raw_ranges(sel: _Select, outer: tuple[Bound, Bound],
                uncapped_rps: frozenset[str]) -> Iterator[tuple[Bound, Bound]]:
    """The effective time range of every SELECT level that reads a capped source directly."""
    effective = _intersect(outer, sel.where)
    capped = False
    for src in sel.sources:
        if src.subquery is not None:
            yield from _raw_ranges(src.subquery, effective, uncapped_rps)
        elif src.rp is None or src.rp not in uncapped_rps:
            capped = True
    if capped:
        yield effective
