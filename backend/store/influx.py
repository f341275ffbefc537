"""Async client for the InfluxDB v1 HTTP API: line protocol on ``/write``, InfluxQL on ``/query``.

The same calls work against InfluxDB 1.x, the v1 compatibility endpoints of 2.x (DBRP mapping, token auth) and
3.x Core (docs/architecture.md). Values from users never go into query text: pass them as bound parameters
(``query("... WHERE device = $device", params={"device": d})``, InfluxQL's ``params`` form field). Identifiers
that must be in the text (database, retention policy) go through :func:`quote_ident`.

Errors: :class:`~backend.errors.InfluxUnavailableError` (transport, timeout, 5xx — retry later; a query's timeout is
its subclass :class:`~backend.errors.InfluxTimeoutError`, so a caller can ask for less next time) and
:class:`~backend.errors.InfluxRejectedError` / :class:`~backend.errors.InfluxQueryError` (4xx, statement error —
do not retry the same request).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import httpx
import msgspec

from backend.errors import (
    InfluxError,
    InfluxQueryError,
    InfluxRejectedError,
    InfluxTimeoutError,
    InfluxUnavailableError,
)

PRECISIONS: Final = frozenset({"ns", "u", "ms", "s", "m", "h"})
EPOCHS: Final = PRECISIONS


class Series(msgspec.Struct, frozen=True):
    """One series of a query result: ``values`` rows follow ``columns``; ``tags`` are the GROUP BY tags."""

    name: str = ""
    columns: list[str] = []
    values: list[list[Any]] = []
    tags: dict[str, str] = {}

    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts (column -> value), GROUP BY tags merged in."""
        return [{**self.tags, **dict(zip(self.columns, v, strict=False))} for v in self.values]


class StatementResult(msgspec.Struct, frozen=True):
    statement_id: int = 0
    series: list[Series] = []
    error: str | None = None


class _QueryResponse(msgspec.Struct):
    results: list[StatementResult] = []
    error: str | None = None


_response_decoder: Final = msgspec.json.Decoder(_QueryResponse)
_params_encoder: Final = msgspec.json.Encoder()


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes (database, retention policy, measurement, field)."""
    if "\n" in name or "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a newline or NUL")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal in single quotes (for DDL, where bound parameters are not accepted)."""
    if "\n" in value or "\x00" in value:
        raise ValueError(f"string {value!r} contains a newline or NUL")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxClient:
    """One pooled httpx client bound to an InfluxDB base URL. Use as an async context manager or ``aclose()``."""

    def __init__(
        self,
        url: str,
        *,
        username: str = "",
        password: str = "",
        token: str = "",
        timeout: float = 10.0,
        max_connections: int = 16,
    ) -> None:
        headers = {"Authorization": f"Token {token}"} if token else {}
        self._auth: dict[str, str] = {"u": username, "p": password} if username and not token else {}
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def __aenter__(self) -> InfluxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def ping(self) -> str:
        """``/ping``: the server version; InfluxUnavailableError when it does not answer 204."""
        try:
            response = await self._http.get("/ping")
        except httpx.HTTPError as exc:
            raise InfluxUnavailableError(f"InfluxDB at {self.url} unreachable: {exc!r}") from exc
        if response.status_code != 204:
            raise InfluxUnavailableError(f"InfluxDB ping answered HTTP {response.status_code}",
                                         status=response.status_code, body=response.text[:500])
        return str(response.headers.get("X-Influxdb-Version", ""))

    async def write(
        self,
        lines: str | bytes | Iterable[str],
        db: str,
        *,
        rp: str | None = None,
        precision: str = "ms",
    ) -> None:
        """POST line protocol to ``/write``; returns when InfluxDB answered 204 (the points are durable in its WAL).

        A 4xx (parse error, field type conflict, partial write) raises InfluxRejectedError: the body names the
        bad line. Anything else raises InfluxUnavailableError.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} not in {sorted(PRECISIONS)}")
        if isinstance(lines, bytes):
            body = lines
        elif isinstance(lines, str):
            body = lines.encode("utf-8")
        else:
            body = "\n".join(lines).encode("utf-8")
        params = {"db": db, "precision": precision, **self._auth}
        if rp:
            params["rp"] = rp
        try:
            response = await self._http.post("/write", params=params, content=body)
        except httpx.HTTPError as exc:
            raise InfluxUnavailableError(f"write to {db!r} failed: {exc!r}", db=db) from exc
        if response.status_code == 204:
            return
        text = response.text[:1000]
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
            raise InfluxRejectedError(f"write to {db!r} rejected: HTTP {response.status_code}: {text}",
                                      status=response.status_code, body=text, db=db)
        raise InfluxUnavailableError(f"write to {db!r} failed: HTTP {response.status_code}: {text}",
                                     status=response.status_code, body=text, db=db)

    async def execute(
        self,
        q: str,
        *,
        db: str | None = None,
        params: Mapping[str, str | int | float | bool] | None = None,
        epoch: str | None = "ms",
    ) -> list[StatementResult]:
        """Run InfluxQL (one or more ``;``-separated statements) and return each statement's result.

        Always POSTs (accepted for SELECT as well as for DDL and SELECT INTO). ``params`` are bound to
        ``$name`` placeholders by the server. Raises InfluxQueryError when a statement failed.
        """
        form: dict[str, str] = {"q": q}
        if db:
            form["db"] = db
        if epoch is not None:
            if epoch not in EPOCHS:
                raise ValueError(f"epoch {epoch!r} not in {sorted(EPOCHS)}")
            form["epoch"] = epoch
        if params:
            form["params"] = _params_encoder.encode(dict(params)).decode()
        try:
            # credentials in the URL: InfluxDB 1.x reads u/p from the query string, not from a form body
            response = await self._http.post("/query", data=form, params=self._auth)
        except httpx.TimeoutException as exc:
            raise InfluxTimeoutError(f"query timed out: {exc!r}", db=db or "") from exc
        except httpx.HTTPError as exc:
            raise InfluxUnavailableError(f"query failed: {exc!r}", db=db or "") from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise InfluxUnavailableError(f"query failed: HTTP {response.status_code}: {response.text[:500]}",
                                         status=response.status_code, body=response.text[:1000], db=db or "")
        try:
            decoded = _response_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise InfluxRejectedError(f"query: HTTP {response.status_code}, unreadable body: "
                                      f"{response.text[:300]!r}", status=response.status_code) from exc
        errors = [decoded.error] if decoded.error else []
        errors += [r.error for r in decoded.results if r.error]
        if errors or response.status_code != 200:
            raise InfluxQueryError(f"query failed: HTTP {response.status_code}: {'; '.join(errors)}",
                                   status=response.status_code, body=response.text[:1000], db=db or "")
        return decoded.results

    async def query(
        self,
        q: str,
        *,
        db: str | None = None,
        params: Mapping[str, str | int | float | bool] | None = None,
        epoch: str | None = "ms",
    ) -> list[Series]:
        """Like :meth:`execute`, flattened: every series of every statement."""
        results = await self.execute(q, db=db, params=params, epoch=epoch)
        return [s for r in results for s in r.series]

    async def rows(
        self,
        q: str,
        *,
        db: str | None = None,
        params: Mapping[str, str | int | float | bool] | None = None,
        epoch: str | None = "ms",
    ) -> list[dict[str, Any]]:
        """Every row of every series as a dict (GROUP BY tags included)."""
        return [row for s in await self.query(q, db=db, params=params, epoch=epoch) for row in s.rows()]


__all__ = [
    "InfluxClient",
    "InfluxError",
    "InfluxQueryError",
    "InfluxRejectedError",
    "InfluxUnavailableError",
    "Series",
    "StatementResult",
    "quote_ident",
    "quote_string",
]
