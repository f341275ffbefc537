"""A real local Mosquitto broker configured from the shipped config, so the tests prove what is deployed.

:class:`MosquittoService` takes every broker-wide option (queue limits, persistence, in-flight window...) from
``deploy/mosquitto/mosquitto.conf``, the file installed on the Raspberry Pi and the cloud broker; only locations
(persistence folder, log file, pid file, user), listeners and security are replaced. A test that loses a message
because of a queue limit therefore fails here exactly as the deployed broker would.

Readiness is a CONNACK to a hand-written MQTT CONNECT, and :meth:`MosquittoService.stop` is graceful (SIGTERM:
the broker writes its persistence file); the lifecycle itself is :class:`devstack.processes.ManagedProcess`.

Example::

    with MosquittoService(Path("/tmp/b")) as broker:
        ...  # connect paho to broker.host, broker.port
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Final

from devstack.processes import (
    HOST,
    SETUP_HINT,
    ManagedProcess,
    ServiceError,
    ServiceNotInstalledError,
    find_binary,
    free_port,
)

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
SHIPPED_MOSQUITTO_CONF: Final = REPO_ROOT / "deploy" / "mosquitto" / "mosquitto.conf"

# Options of the shipped broker config that name places on a deployed machine, or that belong to a listener
# or to security; MosquittoService supplies its own. Everything else is copied verbatim.
_MOSQUITTO_LOCAL_KEYS: Final = frozenset(
    {
        "user", "pid_file", "persistence_location", "log_dest", "include_dir",
        "listener", "port", "bind_address", "bind_interface", "socket_domain", "protocol",
        "password_file", "acl_file", "allow_anonymous", "psk_file", "psk_hint", "plugin", "plugin_opt_config_file",
        "cafile", "capath", "certfile", "keyfile", "require_certificate", "use_identity_as_username",
    }
)  # fmt: skip


def mosquitto_binary() -> str:
    return find_binary("mosquitto", "/usr/sbin/mosquitto")


def dynamic_security_plugin() -> Path:
    """The dynamic-security plugin of the installed Mosquitto (Debian: per architecture; upstream: /usr/lib)."""
    candidates = [*sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so")),
                  Path("/usr/lib/mosquitto_dynamic_security.so")]
    for path in candidates:
        if path.is_file():
            return path
    raise ServiceNotInstalledError(f"mosquitto_dynamic_security.so is not installed under /usr/lib; {SETUP_HINT}")


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


class MosquittoService(ManagedProcess):
    """A Mosquitto broker in ``workdir`` listening on 127.0.0.1:``port`` (a free port when None).

    The config (``workdir/mosquitto.conf``) is the shipped ``deploy/mosquitto/mosquitto.conf`` minus locations,
    plus: persistence in ``workdir/data/``, log in ``workdir/mosquitto.log``, one plain listener, then the
    security options, then ``config_extra`` verbatim (later options override earlier ones, so a test can set
    e.g. ``max_queued_messages 1000`` to reproduce the default, or add listeners).

    ``dynamic_security_file`` loads the dynamic-security plugin (deploy/mosquitto/conf.d/security.conf) with that
    file, as the shipped broker does. The broker rewrites the file whenever a ``$CONTROL/dynamic-security``
    command changes it, so it should live in the test's own folder.
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
        dynamic_security_file: Path | None = None,
    ) -> None:
        super().__init__(workdir, auto_ports=port is None)
        self._binary = mosquitto_binary()
        self._port = port if port is not None else free_port()
        self.config_extra = config_extra
        self.acl_file = acl_file
        self.password_file = password_file
        self.allow_anonymous = allow_anonymous
        self.base_config = base_config
        self.dynamic_security_file = dynamic_security_file
        self._plugin = dynamic_security_plugin() if dynamic_security_file is not None else None

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
        lines = [f"# Written by devstack/mosquitto.py from {self.base_config}; do not edit."]
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
        if self.dynamic_security_file is not None:
            lines += [f"plugin {self._plugin}",
                      f"plugin_opt_config_file {Path(self.dynamic_security_file).resolve()}"]
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
