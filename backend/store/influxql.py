"""InfluxQL as the admin's console reads it: the lexer and the literals (durations, time strings), no I/O.

It follows InfluxDB's own scanner (influxql/scanner.go) closely enough that both agree on where a statement's
tokens begin and end: identifiers, double-quoted identifiers and single-quoted strings with backslash escapes,
numbers, durations (``15m``, ``1h30m``), regexes ``/.../`` where a regex may stand (after ``=~``, ``!~`` and in
``FROM``), operators. What the scanner cannot classify, comments and bound parameters are refused here with a
pt-BR reason (:class:`StatementRefused`), before the statement checks of ``console.py`` look at the tokens.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final, Literal

from backend.errors import BadRequestError

NS_PER: Final = {"ns": 1, "u": 1_000, "µ": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
                 "h": 3_600_000_000_000, "d": 86_400_000_000_000, "w": 604_800_000_000_000}

CLAUSE_END: Final = frozenset({"GROUP", "ORDER", "LIMIT", "OFFSET", "SLIMIT", "SOFFSET", "FILL", "TZ"})
"""Keywords that end a FROM clause (where a regex stops being a measurement)."""

TokKind = Literal["ident", "qident", "string", "number", "integer", "duration", "regex", "op"]


class StatementRefused(BadRequestError):
    """The console does not run this statement; ``detail`` says why, in pt-BR."""


@dataclass(frozen=True)
class Token:
    kind: TokKind
    text: str
    """The token as written (``upper`` for keyword comparisons)."""
    pos: int
    value: str = ""
    """Strings, quoted identifiers and regexes without their quotes and escapes."""

    @property
    def upper(self) -> str:
        return self.text.upper()

    def is_kw(self, *words: str) -> bool:
        return self.kind == "ident" and self.upper in words


# --- lexer ----------------------------------------------------------------------------------------------

_DURATION_RE: Final = re.compile(r"(?:[0-9]+(?:ns|us|u|µ|ms|s|m|h|d|w))+(?![A-Za-z0-9_])")
_NUMBER_RE: Final = re.compile(r"[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?|\.[0-9]+")
_DIGITS: Final = frozenset("0123456789")
_IDENT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS: Final = ("=~", "!~", "!=", "<>", "<=", ">=", "::", "=", "<", ">", "+", "-", "*", "/", "%", "&", "|", "^",
               "(", ")", ",", ".", ";")


def _quoted(text: str, i: int, quote: str) -> tuple[str, int]:
    """The unescaped content of the quoted token starting at ``text[i]`` and the index after it."""
    out: list[str] = []
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == "\\" and j + 1 < len(text):
            out.append(text[j + 1])
            j += 2
            continue
        if c == quote:
            return "".join(out), j + 1
        if c == "\n":
            break
        out.append(c)
        j += 1
    what = "texto entre aspas simples" if quote == "'" else "identificador entre aspas duplas"
    raise StatementRefused(f"Consulta inválida: {what} não fechado (posição {i + 1}).")


def tokenize(text: str) -> list[Token]:
    """InfluxQL tokens; StatementRefused on comments, bound parameters and characters InfluxQL does not know."""
    tokens: list[Token] = []
    i = 0
    in_from = False  # a regex may stand here as a measurement
    saved: list[bool] = []  # in_from outside each open parenthesis
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if text.startswith("--", i) or text.startswith("/*", i):
            raise StatementRefused("Comentários (-- ou /* */) não são aceitos no console; envie só a consulta.")
        prev = tokens[-1] if tokens else None
        regex_allowed = prev is not None and (
            (prev.kind == "op" and prev.text in ("=~", "!~"))
            or (in_from and (prev.is_kw("FROM") or (prev.kind == "op" and prev.text in (",", ".")))))
        if c == "/" and regex_allowed:
            j = i + 1
            while j < len(text) and text[j] != "/":
                j += 2 if text[j] == "\\" else 1
            if j >= len(text):
                raise StatementRefused(f"Consulta inválida: expressão regular não fechada (posição {i + 1}).")
            tokens.append(Token("regex", text[i:j + 1], i, text[i + 1:j]))
            i = j + 1
            continue
        if c == "'":
            value, j = _quoted(text, i, "'")
            tokens.append(Token("string", text[i:j], i, value))
            i = j
            continue
        if c == '"':
            value, j = _quoted(text, i, '"')
            tokens.append(Token("qident", text[i:j], i, value))
            i = j
            continue
        if c == "$":
            raise StatementRefused("Parâmetros ($nome) não são aceitos no console; escreva os valores na consulta.")
        m = _DURATION_RE.match(text, i) if c in _DIGITS else None
        if m:
            tokens.append(Token("duration", m.group(0), i))
            i = m.end()
            continue
        m = _NUMBER_RE.match(text, i) if c in _DIGITS or (c == "." and text[i + 1:i + 2] in _DIGITS) else None
        if m:
            kind: TokKind = "integer" if m.group(0).isdigit() else "number"
            tokens.append(Token(kind, m.group(0), i))
            i = m.end()
            continue
        m = _IDENT_RE.match(text, i)
        if m:
            tok = Token("ident", m.group(0), i, m.group(0))
            tokens.append(tok)
            if tok.is_kw("FROM"):
                in_from = True
            elif tok.is_kw("WHERE", *CLAUSE_END):
                in_from = False
            i = m.end()
            continue
        op = next((o for o in _OPS if text.startswith(o, i)), None)
        if op is None:
            raise StatementRefused(f"Consulta inválida: caractere {c!r} inesperado (posição {i + 1}).")
        tokens.append(Token("op", op, i))
        if op == "(":  # a subquery or a call: its own FROM sets the state again
            saved.append(in_from)
            in_from = False
        elif op == ")":
            in_from = saved.pop() if saved else False
        i += len(op)
    return tokens


def parse_duration(text: str) -> int:
    """An InfluxQL duration literal (``1h30m``) in nanoseconds."""
    total = 0
    for number, unit in re.findall(r"([0-9]+)(ns|us|u|µ|ms|s|m|h|d|w)", text):
        total += int(number) * NS_PER["u" if unit == "us" else unit]
    return total


def parse_time_string(value: str) -> int | None:
    """An InfluxQL time string (RFC 3339, ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM:SS[.f]``; UTC when no offset) in
    nanoseconds, or None when it is not a time."""
    s = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        s += "T00:00:00"
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?", s)
    if not m:
        return None
    try:
        base = dt.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}")
    except ValueError:
        return None
    tz = m.group(4)
    offset = dt.UTC if tz in (None, "Z") else dt.datetime.strptime(tz, "%z").tzinfo
    base = base.replace(tzinfo=offset)
    frac = (m.group(3) or ".")[1:].ljust(9, "0")
    return int(base.timestamp()) * 1_000_000_000 + int(frac or 0)
