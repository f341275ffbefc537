"""A real local InfluxDB 1.x (Debian's ``influxd`` 1.6) for the tests, the benchmarks and the launcher.

The backend talks to InfluxDB only through the v1 HTTP API, so the dev stack runs the real server rather than a
fake: :class:`InfluxService` writes an ``influxd`` config with its data, WAL and meta folders in the workdir, HTTP
and RPC bound to free loopback ports, no reporting, no UDP/Graphite, no ``_internal`` monitor database, and a WAL
fsynced before every 204, so a crash test's accepted writes survive ``kill -9`` as they do in production.

It also carries a small client (:meth:`InfluxService.write`, :meth:`InfluxService.query`,
:meth:`InfluxService.rows`) so tests and benchmarks can seed and check data without going through the backend
they are testing. Readiness is a 204 on ``/ping``; the lifecycle is :class:`devstack.processes.ManagedProcess`.

By default the server runs without authentication (every test but the security ones). ``InfluxService(workdir,
admin=("admin", "secret"))`` starts it with ``auth-enabled = true`` and creates that admin user on the first start
(InfluxDB 1.x accepts exactly one unauthenticated statement then: creating the first admin); the service's own
client then authenticates as the admin (HTTP Basic), so :meth:`~InfluxService.query` and friends keep working,
while any other client must bring its own credentials — the tests of the read-only InfluxQL console use it to show
that InfluxDB itself refuses what a READ-only user may not do.

Example::

    with InfluxService(Path("/tmp/i")) as influx:
        influx.create_database("cds")
        influx.write("cds", ["m v=1 1"])
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import httpx

from devstack.processes import HOST, ManagedProcess, ServiceError, find_binary, free_port


class InfluxError(ServiceError):
    """InfluxDB answered a query or write with an error."""

    def __init__(self, message: str, *, status: int = 0, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def influxd_binary() -> str:
    return find_binary("influxd", "/usr/bin/influxd")


_INFLUX_CONFIG: Final = """\
# Written by devstack/influxdb.py; do not edit.
reporting-enabled = false  # Debian's influxdb 1.6 spelling
reporting-disabled = true  # upstream 1.x spelling; the other one is ignored
bind-address = "{host}:{rpc_port}"

[meta]
  dir = "{workdir}/meta"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  # fsync every write before answering 204: an accepted write survives kill -9
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = false
  trace-logging-enabled = false
  cache-max-memory-size = 268435456
  cache-snapshot-memory-size = 26214400
  cache-snapshot-write-cold-duration = "10m0s"
  compact-full-write-cold-duration = "4h0m0s"
  max-series-per-database = 1000000
  max-values-per-tag = 100000

[coordinator]
  write-timeout = "10s"
  query-timeout = "0s"

[retention]
  enabled = true
  check-interval = "30m0s"

[shard-precreation]
  enabled = true

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "{host}:{http_port}"
  auth-enabled = {auth_enabled}
  log-enabled = false
  suppress-write-log = true
  pprof-enabled = false
  https-enabled = false
  unix-socket-enabled = false
  max-row-limit = 0
  max-body-size = 25000000

[logging]
  format = "logfmt"
  level = "info"
  suppress-logo = true

[ifql]
  enabled = false

[continuous_queries]
  enabled = true
  log-enabled = false
  run-interval = "1s"

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
"""

_READ_ONLY_PREFIXES: Final = ("select", "show")


def quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier (database, measurement, tag key)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL single-quoted string literal (passwords in user DDL)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxService(ManagedProcess):
    """An InfluxDB 1.x ``influxd`` in ``workdir`` serving HTTP on 127.0.0.1:``http_port`` (free when None).

    Speaks the v1 HTTP API the backend uses: :meth:`write` (line protocol on ``/write``) and :meth:`query`
    (InfluxQL on ``/query``). Logs (stderr) go to ``workdir/influxd.log``.
    """

    name = "influxd"
    _log_name = "influxd.log"

    def __init__(self, workdir: Path, http_port: int | None = None, *, admin: tuple[str, str] | None = None) -> None:
        super().__init__(workdir, auto_ports=http_port is None)
        self._binary = influxd_binary()
        self._http_port = http_port if http_port is not None else free_port()
        self._rpc_port = free_port()
        self._client: httpx.Client | None = None
        self.admin = admin
        """``(username, password)`` of the admin user when authentication is enabled; None = no authentication."""

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self._http_port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._http_port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "influxdb.conf"

    def _choose_ports(self) -> None:
        if self._auto_ports:
            self._http_port = free_port()
        self._rpc_port = free_port()

    def _write_config(self) -> None:
        text = _INFLUX_CONFIG.format(
            host=HOST, workdir=self.workdir, http_port=self._http_port, rpc_port=self._rpc_port,
            auth_enabled="true" if self.admin else "false",
        )
        self.config_path.write_text(text, encoding="utf-8")

    def _command(self) -> list[str]:
        return [self._binary, "run", "-config", str(self.config_path)]

    def _env(self) -> dict[str, str]:
        # influxd lets INFLUXDB_* variables override any config key; ours must be exactly what we wrote
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=1.0).status_code == 204
        except httpx.HTTPError:
            return False

    def start(self, timeout: float = 15.0) -> None:
        """Start (see :meth:`ManagedProcess.start`); with ``admin`` set, also create the admin user if missing."""
        super().start(timeout)
        if self.admin is not None:
            self._create_admin()

    def _create_admin(self) -> None:
        assert self.admin is not None
        user, password = self.admin
        statement = f"CREATE USER {quote_ident(user)} WITH PASSWORD {quote_string(password)} WITH ALL PRIVILEGES"
        try:  # without credentials: InfluxDB 1.x allows only this statement while no admin exists
            response = httpx.post(f"{self.url}/query", data={"q": statement}, timeout=10.0)
        except httpx.HTTPError as exc:
            raise InfluxError(f"creating the admin user failed: {exc}") from exc
        if response.status_code == 200 and "error" not in response.text:
            return
        # an admin exists already (a restart): make sure it is ours
        self.query("SHOW USERS", epoch=None)

    def _after_exit(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> httpx.Client:
        """An HTTP client bound to this server (recreated after a restart)."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=30.0, auth=self.admin)
        return self._client

    def query(self, q: str, db: str | None = None, epoch: str | None = "ms") -> dict[str, Any]:
        """Run InfluxQL; return the decoded JSON. Raises :class:`InfluxError` when any statement failed.

        Read-only statements (SELECT, SHOW) use GET, everything else POST, as InfluxDB 1.x requires.
        """
        params: dict[str, str] = {"q": q}
        if db is not None:
            params["db"] = db
        if epoch is not None:
            params["epoch"] = epoch
        try:
            if q.lstrip().lower().startswith(_READ_ONLY_PREFIXES) and " into " not in q.lower():
                response = self.client.get("/query", params=params)
            else:
                response = self.client.post("/query", data=params)
        except httpx.HTTPError as exc:
            raise InfluxError(f"query {q!r} failed: {exc}") from exc
        try:
            body: dict[str, Any] = response.json()
        except ValueError as exc:
            raise InfluxError(
                f"query {q!r}: HTTP {response.status_code}, not JSON: {response.text[:500]}",
                status=response.status_code,
                body=response.text,
            ) from exc
        errors = [body["error"]] if "error" in body else []
        errors += [r["error"] for r in body.get("results", []) if "error" in r]
        if errors or response.status_code != 200:
            raise InfluxError(
                f"query {q!r}: HTTP {response.status_code}: {'; '.join(map(str, errors))}",
                status=response.status_code,
                body=response.text,
            )
        return body

    def rows(self, q: str, db: str | None = None, epoch: str | None = "ms") -> list[dict[str, Any]]:
        """The result of one query as flat dicts (column -> value, plus the series' GROUP BY tags)."""
        out: list[dict[str, Any]] = []
        for result in self.query(q, db=db, epoch=epoch).get("results", []):
            for series in result.get("series", []):
                tags = series.get("tags") or {}
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(tags)
                    out.append(row)
        return out

    def write(self, db: str, lines: str | bytes | Iterable[str], precision: str = "ms") -> None:
        """POST line protocol to ``/write``; raises :class:`InfluxError` unless InfluxDB answers 204."""
        if isinstance(lines, str):
            body = lines.encode("utf-8")
        elif isinstance(lines, bytes):
            body = lines
        else:
            body = "\n".join(lines).encode("utf-8")
        try:
            response = self.client.post("/write", params={"db": db, "precision": precision}, content=body)
        except httpx.HTTPError as exc:
            raise InfluxError(f"write to {db!r} failed: {exc}") from exc
        if response.status_code != 204:
            raise InfluxError(
                f"write to {db!r}: HTTP {response.status_code}: {response.text[:500]}",
                status=response.status_code,
                body=response.text,
            )

    def create_database(self, name: str) -> None:
        """CREATE DATABASE (idempotent in InfluxDB 1.x)."""
        self.query(f"CREATE DATABASE {quote_ident(name)}", epoch=None)

    def __repr__(self) -> str:
        return f"InfluxService({self.url}, running={self.running}, workdir={self.workdir})"
