"""Real local Mosquitto and InfluxDB processes for tests, benchmarks and the local launcher.

CDS tests never mock the broker or the database: they start the real programs from Debian's ``mosquitto``
(2.0) and ``influxdb`` (1.6) packages, each in its own folder, on free ports of 127.0.0.1, with our own
configuration — a system-wide instance installed by apt (ports 1883/8086/8088) is never used or touched.

- :class:`MosquittoService` takes every broker-wide option (queue limits, persistence, in-flight window...) from
  the shipped ``deploy/mosquitto/mosquitto.conf``, so the tests prove what is deployed; only locations
  (persistence folder, log file, pid file, user), listeners and security are replaced.
- :class:`InfluxService` writes an ``influxd`` config with its data, WAL and meta folders in the workdir, HTTP and
  RPC bound to free loopback ports, no reporting, no UDP/Graphite, no ``_internal`` monitor database.

Both offer ``start()`` (returns once the service answers: a CONNACK, a 204 on ``/ping``), ``stop()`` (SIGTERM,
graceful: Mosquitto writes its persistence file), ``kill()`` (SIGKILL, for crash tests) and ``restart()``; the
ports stay the same across restarts so clients can reconnect. Each process runs in its own process group, is
stopped by ``__exit__``, at interpreter exit, and (via ``setpriv --pdeathsig``) when the Python process that
started it dies — start services from a thread that lives as long as they do (normally the main thread).

Example::

    with MosquittoService(Path("/tmp/b")) as broker, InfluxService(Path("/tmp/i")) as influx:
        influx.create_database("cds")
        ...  # connect paho to broker.host, broker.port; influx.write("cds", ["m v=1 1"])
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Final, Self

import httpx

HOST: Final = "127.0.0.1"
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
SHIPPED_MOSQUITTO_CONF: Final = REPO_ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
SETUP_HINT: Final = "run `bash scripts/setup.sh` to install it"

# Options of the shipped broker config that name places on a deployed machine, or that belong to a listener
# or to security; MosquittoService supplies its own. Everything else is copied verbatim.
_MOSQUITTO_LOCAL_KEYS: Final = frozenset(
    {
        "user", "pid_file", "persistence_location", "log_dest", "include_dir",
        "listener", "port", "bind_address", "bind_interface", "socket_domain", "protocol",
        "password_file", "acl_file", "allow_anonymous", "psk_file", "psk_hint",
        "cafile", "capath", "certfile", "keyfile", "require_certificate", "use_identity_as_username",
    }
)  # fmt: skip


class ServiceError(RuntimeError):
    """A local service could not be started, stopped or used."""


class ServiceNotInstalledError(ServiceError):
    """The service's binary is not installed."""


class ServiceStartError(ServiceError):
    """The service exited or did not answer in time while starting; the message carries its log tail."""


class InfluxError(ServiceError):
    """InfluxDB answered a query or write with an error."""

    def __init__(self, message: str, *, status: int = 0, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def free_port(host: str = HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_binary(name: str, *fallbacks: str) -> str:
    """Path of ``name`` on PATH or at one of ``fallbacks`` (Debian puts mosquitto in /usr/sbin)."""
    found = shutil.which(name)
    if found:
        return found
    for path in fallbacks:
        if os.access(path, os.X_OK):
            return path
    raise ServiceNotInstalledError(
        f"{name} is not installed (looked on PATH and in {', '.join(fallbacks)}); {SETUP_HINT}"
    )


def mosquitto_binary() -> str:
    return find_binary("mosquitto", "/usr/sbin/mosquitto")


def influxd_binary() -> str:
    return find_binary("influxd", "/usr/bin/influxd")


_LIVE: set[_ManagedProcess] = set()


@atexit.register
def _stop_all() -> None:
    for service in list(_LIVE):
        with contextlib.suppress(Exception):
            service.stop(timeout=5)


class _ManagedProcess(abc.ABC):
    """Start/stop/kill of one server process in its own process group, with a readiness probe."""

    name: ClassVar[str] = "service"
    _log_name: ClassVar[str] = "service.log"

    def __init__(self, workdir: Path, *, auto_ports: bool) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._auto_ports = auto_ports
        self._started_once = False

    # --- what subclasses provide -------------------------------------------------------------------------

    @abc.abstractmethod
    def _write_config(self) -> None: ...

    @abc.abstractmethod
    def _command(self) -> list[str]: ...

    @abc.abstractmethod
    def _ready(self) -> bool: ...

    @abc.abstractmethod
    def _choose_ports(self) -> None: ...

    def _env(self) -> dict[str, str] | None:
        return None

    # --- lifecycle ----------------------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.workdir / self._log_name

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self, timeout: float = 15.0) -> None:
        """Spawn the process and return once it answers; no-op when already running.

        Raises :class:`ServiceStartError` with the log tail when it exits or stays silent for ``timeout`` s.
        An automatically chosen port that was taken meanwhile is replaced, but only before the first
        successful start: afterwards the ports never change.
        """
        if self.running:
            return
        attempts = 3 if self._auto_ports and not self._started_once else 1
        for attempt in range(attempts):
            try:
                self._spawn_and_wait(timeout)
            except ServiceStartError as exc:
                if attempt + 1 < attempts and "address already in use" in str(exc).lower():
                    self._choose_ports()
                    continue
                raise
            self._started_once = True
            return

    def _spawn_and_wait(self, timeout: float) -> None:
        self._write_config()
        command = self._command()
        setpriv = shutil.which("setpriv")
        if setpriv:  # SIGTERM the service if our process dies without cleaning up (e.g. pytest killed)
            command = [setpriv, "--pdeathsig", "TERM", "--", *command]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir, env=self._env(), start_new_session=True,
            )  # fmt: skip
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                _LIVE.discard(self)
                raise ServiceStartError(
                    f"{self.name} exited with status {code} while starting; {self.log_path}:\n{self._log_since(offset)}"
                )
            if self._ready() and self._proc.poll() is None:  # ours answered, not a squatter on the port
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceStartError(
                    f"{self.name} did not answer within {timeout:.0f} s; {self.log_path}:\n{self._log_since(offset)}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop: SIGTERM to the process group, then wait (SIGKILL after ``timeout`` s)."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Crash stop: SIGKILL, nothing is flushed (what ``kill -9`` or a power cut does)."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self, timeout: float = 15.0) -> None:
        """Graceful stop, then start on the same ports with the same data."""
        self.stop()
        self.start(timeout)

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        try:
            if proc is None or proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10.0)
        finally:
            _LIVE.discard(self)
            self._after_exit()

    def _after_exit(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Hook for subclasses to drop connections to the stopped process."""

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The end of the service's log file, for failure messages."""
        if not self.log_path.exists():
            return ""
        size = self.log_path.stat().st_size
        return self._log_since(max(0, size - max_bytes))

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        return data[-4000:].decode("utf-8", "replace")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


# --- Mosquitto ----------------------------------------------------------------------------------------------


def shipped_mosquitto_options(path: Path = SHIPPED_MOSQUITTO_CONF) -> list[tuple[str, str]]:
    """The broker-wide (key, value) options of the shipped config, in file order, locations excluded."""
    if not path.is_file():
        raise ServiceError(f"shipped broker config {path} is missing")
    options = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key not in _MOSQUITTO_LOCAL_KEYS:
            options.append((key, value.strip()))
    return options


def _mqtt_connack_received(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a minimal MQTT 3.1.1 CONNECT is answered with a CONNACK (any return code: even "not
    authorised" proves the broker is serving). Stdlib only, so readiness does not depend on paho."""
    client_id = f"cds-probe-{os.getpid()}".encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a"  # protocol name, level 4, clean session, keepalive 10 s
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable + payload
    packet = b"\x10" + bytes((len(body),)) + body
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(packet)
            reply = b""
            while len(reply) < 4:
                chunk = s.recv(4 - len(reply))
                if not chunk:
                    return False
                reply += chunk
            with contextlib.suppress(OSError):
                s.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean exit
            return reply[0] == 0x20 and reply[1] == 0x02
    except OSError:
        return False


class MosquittoService(_ManagedProcess):
    """A Mosquitto broker in ``workdir`` listening on 127.0.0.1:``port`` (a free port when None).

    The config (``workdir/mosquitto.conf``) is the shipped ``deploy/mosquitto/mosquitto.conf`` minus locations,
    plus: persistence in ``workdir/data/``, log in ``workdir/mosquitto.log``, one plain listener, then the
    security options, then ``config_extra`` verbatim (later options override earlier ones, so a test can set
    e.g. ``max_queued_messages 1000`` to reproduce the default, or add listeners).
    """

    name = "mosquitto"
    _log_name = "mosquitto.log"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        config_extra: str = "",
        acl_file: Path | None = None,
        password_file: Path | None = None,
        allow_anonymous: bool = True,
        base_config: Path = SHIPPED_MOSQUITTO_CONF,
    ) -> None:
        super().__init__(workdir, auto_ports=port is None)
        self._binary = mosquitto_binary()
        self._port = port if port is not None else free_port()
        self.config_extra = config_extra
        self.acl_file = acl_file
        self.password_file = password_file
        self.allow_anonymous = allow_anonymous
        self.base_config = base_config

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self._port

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def _choose_ports(self) -> None:
        self._port = free_port()

    def config_text(self) -> str:
        """The configuration this broker runs with."""
        lines = [f"# Written by devstack/services.py from {self.base_config}; do not edit."]
        lines += [f"{key} {value}".rstrip() for key, value in shipped_mosquitto_options(self.base_config)]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise the broker drops to 'mosquitto' and cannot write workdir
        lines += [
            f"persistence_location {self.data_dir}/",
            f"log_dest file {self.log_path}",
            f"listener {self.port} {HOST}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
        ]
        if self.password_file is not None:
            lines.append(f"password_file {Path(self.password_file).resolve()}")
        if self.acl_file is not None:
            lines.append(f"acl_file {Path(self.acl_file).resolve()}")
        if self.config_extra.strip():
            lines += ["# config_extra", self.config_extra.strip()]
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    def _command(self) -> list[str]:
        return [self._binary, "-c", str(self.config_path)]

    def _ready(self) -> bool:
        return _mqtt_connack_received(self.host, self.port)

    @property
    def db_path(self) -> Path:
        """The persistence file (``persistence_file`` of the shipped config, in ``data_dir``)."""
        name = dict(shipped_mosquitto_options(self.base_config)).get("persistence_file", "mosquitto.db")
        return self.data_dir / name

    def save(self, timeout: float = 10.0) -> None:
        """Write the persistence file now (SIGUSR1) and wait until it is complete, e.g. before a kill -9 test.

        Mosquitto writes ``<db>.new`` and renames it over ``<db>``, so a new inode at ``db_path`` means done.
        """
        if self._proc is None or not self.running:
            raise ServiceError("mosquitto is not running")
        before = self.db_path.stat().st_ino if self.db_path.exists() else None
        os.kill(self._proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not (self.db_path.exists() and self.db_path.stat().st_ino != before):
            if time.monotonic() > deadline:
                raise ServiceError(f"mosquitto did not write {self.db_path} within {timeout:.0f} s")
            time.sleep(0.01)

    def __repr__(self) -> str:
        return f"MosquittoService({self.host}:{self.port}, running={self.running}, workdir={self.workdir})"


# --- InfluxDB 1.x -------------------------------------------------------------------------------------------

_INFLUX_CONFIG: Final = """\
# Written by devstack/services.py; do not edit.
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
  auth-enabled = false
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


class InfluxService(_ManagedProcess):
    """An InfluxDB 1.x ``influxd`` in ``workdir`` serving HTTP on 127.0.0.1:``http_port`` (free when None).

    Speaks the v1 HTTP API the backend uses: :meth:`write` (line protocol on ``/write``) and :meth:`query`
    (InfluxQL on ``/query``). Logs (stderr) go to ``workdir/influxd.log``.
    """

    name = "influxd"
    _log_name = "influxd.log"

    def __init__(self, workdir: Path, http_port: int | None = None) -> None:
        super().__init__(workdir, auto_ports=http_port is None)
        self._binary = influxd_binary()
        self._http_port = http_port if http_port is not None else free_port()
        self._rpc_port = free_port()
        self._client: httpx.Client | None = None

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
            host=HOST, workdir=self.workdir, http_port=self._http_port, rpc_port=self._rpc_port
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

    def _after_exit(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> httpx.Client:
        """An HTTP client bound to this server (recreated after a restart)."""
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=30.0)
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
