"""The admin's InfluxQL console, I/O side: the READ-only InfluxDB user and the capped runner that uses it.

Three layers stand between ``POST /api/v1/consultas/influxql`` and the data, and each would hold alone:

1. :mod:`backend.store.console` accepts only one ``SELECT`` (no ``INTO``) or schema ``SHOW`` with a bounded time
   range on raw data;
2. :class:`ReadOnlyInflux` sends it as a *separate* InfluxDB user (``BACKEND_INFLUX_READONLY_USERNAME``) that has
   READ on the backend's database and no other privilege — :func:`ensure_readonly_user` creates it and takes
   away anything more — and refuses to run at all when InfluxDB does not enforce authentication (then the
   user's privileges would mean nothing);
3. the runner streams the answer (``chunked=true``) and stops reading at ``max_rows`` rows, ``max_bytes`` bytes
   or ``timeout_s`` seconds. Closing the connection makes InfluxDB 1.x abort the query (its HTTP handler
   cancels a query whose client went away), so a runaway statement stops using the server too.

Note that InfluxDB 1.6 still *executes* a ``DROP``/``CREATE`` sent with GET (it only adds a deprecation warning),
so the HTTP method is no guard; the runner POSTs, and the privileges are what InfluxDB checks. One gap of
InfluxDB 1.x itself: ``CREATE CONTINUOUS QUERY ... INTO <measurement>`` (no database in the target) needs only
READ, so a READ user could leave a query behind that writes derived points into the same database. The
console's first layer refuses every ``CREATE``; :func:`ensure_readonly_user` warns about any continuous query
on the backend's database (CDS makes none); deployments that need no continuous queries can switch the service
off (``[continuous_queries] enabled = false``). Flux is not served by InfluxDB 1.x (and was dropped again in
3.x): the console speaks InfluxQL only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from typing import Any, Final

import httpx
import msgspec

from backend.errors import ApiError, BadRequestError, InfluxQueryError, InfluxUnavailableError, UnavailableError
from backend.settings import Settings
from backend.store.console import check_statement
from backend.store.influx import InfluxClient, quote_ident, quote_string
from backend.store.layout import AGGREGATED_RPS

log = logging.getLogger(__name__)

MAX_BYTES: Final = 32 * 1024 * 1024
"""Most bytes of one answer read from InfluxDB (a guard for SHOW answers, which are not chunked by rows)."""
_AUTH_CHECK_S: Final = 60.0


class ConsoleUnavailable(UnavailableError):
    """The console cannot run safely (not configured, InfluxDB without authentication, bad credentials)."""


class ConsoleForbidden(ApiError):
    """InfluxDB refused the statement for the read-only user (a privilege it does not have)."""

    status_code = 403


class ConsoleTimeout(ApiError):
    """The statement ran longer than the console's timeout and was stopped."""

    status_code = 504


class ConsoleSeries(msgspec.Struct):
    name: str = ""
    columns: list[str] = []
    values: list[list[Any]] = []
    tags: dict[str, str] = {}


class _Result(msgspec.Struct):
    statement_id: int = 0
    series: list[ConsoleSeries] = []
    messages: list[dict[str, str]] = []
    error: str | None = None


class _Chunk(msgspec.Struct):
    results: list[_Result] = []
    error: str | None = None


_chunk_decoder: Final = msgspec.json.Decoder(_Chunk)


class ConsoleResult(msgspec.Struct):
    """What ``POST /api/v1/consultas/influxql`` answers."""

    consulta: str
    db: str
    series: list[ConsoleSeries]
    linhas: int
    """Rows returned (at most ``limite_linhas``)."""
    truncada: bool
    """True when InfluxDB had more rows (or more bytes) than the console returns."""
    limite_linhas: int
    duracao_ms: float
    avisos: list[str] = []
    """InfluxDB's warnings for the statement."""


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once: building it costs ~20 ms, and the console opens a client per
    request (its clients live as long as one statement)."""
    return httpx.create_ssl_context()


class ReadOnlyInflux:
    """An HTTP client that runs statements as the read-only user, capped in rows, bytes and time.

    It does not check statements (that is :func:`run_console`'s first step), so tests can hand it anything and
    watch InfluxDB refuse it. Use as an async context manager.
    """

    def __init__(self, url: str, username: str, password: str, *, timeout_s: float, max_rows: int,
                 max_bytes: int = MAX_BYTES) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._http = httpx.AsyncClient(base_url=self.url, auth=(username, password), verify=_tls_context(),
                                       timeout=httpx.Timeout(timeout_s + 5.0))

    async def __aenter__(self) -> ReadOnlyInflux:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def require_auth(self) -> None:
        """ConsoleUnavailable unless InfluxDB refuses an unauthenticated query (auth-enabled)."""
        try:
            response = await self._http.post("/query", data={"q": "SHOW DATABASES"}, auth=_no_auth)
        except httpx.HTTPError as exc:
            raise InfluxUnavailableError(f"InfluxDB at {self.url} unreachable: {exc!r}") from exc
        if response.status_code != 401:
            raise ConsoleUnavailable(
                "O InfluxDB aceita consultas sem autenticação; o console InfluxQL só funciona com a autenticação "
                "ligada (auth-enabled), para que o próprio banco recuse o que não for leitura.")

    async def run(self, statement: str, db: str) -> ConsoleResult:
        """Run ``statement`` on ``db`` as the read-only user; at most ``max_rows`` rows, ``timeout_s`` seconds."""
        t0 = time.perf_counter()
        form = {"q": statement, "db": db, "epoch": "ms", "chunked": "true",
                "chunk_size": str(min(self.max_rows + 1, 10000))}
        series: list[ConsoleSeries] = []
        warnings: list[str] = []
        rows = 0
        truncated = False
        try:
            async with asyncio.timeout(self.timeout_s), self._http.stream("POST", "/query", data=form) as response:
                if response.status_code != 200:
                    body = await _read_capped(response, 64 * 1024)
                    _raise_for(response.status_code, body)
                buffer = b""
                received = 0
                async for data in response.aiter_bytes():
                    received += len(data)
                    buffer += data
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        rows, truncated = self._add(line, series, warnings, rows)
                        if truncated:
                            break
                    if truncated:
                        break
                    if received > self.max_bytes:
                        truncated = True
                        break
                else:
                    if buffer.strip():
                        rows, truncated = self._add(buffer, series, warnings, rows)
        except TimeoutError as exc:
            raise ConsoleTimeout(f"A consulta passou do tempo limite de {self.timeout_s:g} s e foi interrompida; "
                                 "reduza o período ou agregue mais (GROUP BY time(...)).") from exc
        except httpx.HTTPError as exc:
            raise InfluxUnavailableError(f"console query failed: {exc!r}", db=db) from exc
        return ConsoleResult(consulta=statement, db=db, series=series, linhas=rows, truncada=truncated,
                             limite_linhas=self.max_rows, duracao_ms=round((time.perf_counter() - t0) * 1000, 1),
                             avisos=warnings)

    def _add(self, line: bytes, series: list[ConsoleSeries], warnings: list[str], rows: int) -> tuple[int, bool]:
        """Merge one chunk into ``series``; returns the row count and whether the row cap was reached."""
        if not line.strip():
            return rows, False
        try:
            chunk = _chunk_decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise InfluxUnavailableError(f"console: unreadable answer {line[:200]!r}") from exc
        if chunk.error:
            _raise_for(200, msgspec.json.encode({"error": chunk.error}))
        for result in chunk.results:
            if result.error:
                _raise_for(200, msgspec.json.encode({"error": result.error}))
            warnings += [m.get("text", "") for m in result.messages if m.get("text") not in warnings]
            for s in result.series:
                room = self.max_rows - rows
                if room <= 0 and s.values:
                    return rows, True
                values = s.values[:room]
                rows += len(values)
                last = series[-1] if series else None
                if last is not None and last.name == s.name and last.tags == s.tags and last.columns == s.columns:
                    last.values.extend(values)
                else:
                    series.append(ConsoleSeries(name=s.name, columns=s.columns, values=values, tags=s.tags))
                if len(s.values) > room:
                    return rows, True
        return rows, False


def _no_auth(request: httpx.Request) -> httpx.Request:
    return request


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    body = b""
    async for data in response.aiter_bytes():
        body += data
        if len(body) >= limit:
            break
    return body[:limit]


def _influx_error(body: bytes) -> str:
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return str(decoded["error"])
    return body[:300].decode("utf-8", "replace")


def _raise_for(status: int, body: bytes) -> None:
    """Translate InfluxDB's refusal into the console's errors (pt-BR for the admin, InfluxDB's text quoted)."""
    message = _influx_error(body)
    if status == 401:
        raise ConsoleUnavailable("O InfluxDB recusou as credenciais do usuário somente leitura do console "
                                 "(BACKEND_INFLUX_READONLY_USERNAME/PASSWORD).")
    if status == 403 or "not authorized" in message:
        raise ConsoleForbidden(f"O InfluxDB recusou a consulta: o usuário somente leitura não tem permissão para "
                               f"isso ({message}).")
    if status >= 500:
        raise InfluxUnavailableError(f"console query failed: HTTP {status}: {message}", status=status)
    raise BadRequestError(f"O InfluxDB recusou a consulta: {message}")


async def run_console(settings: Settings, consulta: str, db: str | None = None) -> ConsoleResult:
    """Check ``consulta`` (backend.store.console) and run it as the read-only user; the console's one entry."""
    database = db or settings.influx_db
    checked = check_statement(consulta, now_ns=time.time_ns(), max_raw_range_ns=settings.influxql_max_raw_range_s
                              * 1_000_000_000, uncapped_rps=AGGREGATED_RPS)
    if not settings.influx_readonly_username:
        raise ConsoleUnavailable("Console InfluxQL desligado: configure BACKEND_INFLUX_READONLY_USERNAME e "
                                 "BACKEND_INFLUX_READONLY_PASSWORD (usuário do InfluxDB só com leitura).")
    async with ReadOnlyInflux(settings.influx_url, settings.influx_readonly_username,
                              settings.influx_readonly_password, timeout_s=settings.influxql_timeout_s,
                              max_rows=settings.influxql_max_rows) as client:
        await _auth_enforced(client)
        return await client.run(checked.text, database)


_auth_checked: dict[str, float] = {}


async def _auth_enforced(client: ReadOnlyInflux) -> None:
    """:meth:`ReadOnlyInflux.require_auth`, remembered for a minute per InfluxDB URL."""
    now = time.monotonic()
    if now - _auth_checked.get(client.url, -_AUTH_CHECK_S) < _AUTH_CHECK_S:
        return
    await client.require_auth()
    _auth_checked[client.url] = now


async def ensure_readonly_user(influx: InfluxClient, settings: Settings) -> None:
    """Create the console's user (or reset its password) with READ on ``influx_db`` and nothing else.

    Needs the backend's InfluxDB user to be an admin. Idempotent and safe for replicas starting together. Any
    failure is logged, not raised: the backend runs without the console (which then answers 503).
    """
    user = settings.influx_readonly_username
    if not user:
        return
    ident, password, db = quote_ident(user), quote_string(settings.influx_readonly_password), settings.influx_db
    try:
        users = {r["user"]: bool(r.get("admin")) for r in await influx.rows("SHOW USERS", epoch=None)}
        if user not in users:
            try:
                await influx.execute(f"CREATE USER {ident} WITH PASSWORD {password}", epoch=None)
            except InfluxQueryError as exc:
                if "already exists" not in str(exc):
                    raise
        await influx.execute(f"SET PASSWORD FOR {ident} = {password}", epoch=None)
        if users.get(user):
            await influx.execute(f"REVOKE ALL PRIVILEGES FROM {ident}", epoch=None)
        for grant in await influx.rows(f"SHOW GRANTS FOR {ident}", epoch=None):
            if grant["privilege"] != "NO PRIVILEGES" and (grant["database"], grant["privilege"]) != (db, "READ"):
                await influx.execute(f"REVOKE ALL ON {quote_ident(grant['database'])} FROM {ident}", epoch=None)
        await influx.execute(f"GRANT READ ON {quote_ident(db)} TO {ident}", epoch=None)
        # InfluxDB 1.x lets a READ user create a continuous query that writes into the same database (its
        # privilege check asks READ when the INTO target names no database). The console's checks refuse CREATE,
        # and CDS creates no continuous query, so any found on its database is reported.
        cqs = [q for s in await influx.query("SHOW CONTINUOUS QUERIES", epoch=None) if s.name == db
               for q in s.rows()]
        if cqs:
            log.warning("continuous queries found on the backend's database; CDS creates none: check who made them",
                        extra={"db": db, "queries": [q.get("name") for q in cqs]})
    except (InfluxQueryError, InfluxUnavailableError) as exc:
        log.warning("influxql console: read-only user not managed (the backend's InfluxDB user must be an admin)",
                    extra={"user": user, "error": str(exc)[:300]})
        return
    log.info("influxql console: read-only user ready", extra={"user": user, "db": db})
