"""The chain under test as real processes: Mosquitto, InfluxDB, two backend replicas and one gateway.

Why not ``python -m devstack``: its launcher restarts a child that dies on its own, runs one backend and picks its
own moments; the chaos run must be the only one that kills and restarts, at seeded moments, with kill -9, and it
needs two replicas in one share group. So this module reuses devstack's building blocks as they are — the broker
from the shipped ``deploy/mosquitto/mosquitto.conf`` with the dynamic-security plugin and a users file made by the
operator's own command (``python -m backend broker-users``, through :class:`devstack.security.DemoSecrets`),
InfluxDB with authentication on, owner-only secrets — and adds the product's two processes on the same
:class:`devstack.processes.ManagedProcess` lifecycle (own process group, readiness probe, ``kill()`` is SIGKILL,
stopped with the parent).

Deliberate differences from the shipped defaults, each to fit a run of minutes: the gateway re-sends unconfirmed
readings after 15 s instead of 60 s (``receipt_timeout_s``; the mechanism is the same, a 150 s run would otherwise
end before a lost batch is re-sent) and rescans its port glob every second; the backends run no ANEEL/ONS pulls
and no alert engine (nothing leaves 127.0.0.1, and they are not on the reading path).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import ClassVar, Final

import httpx

from backend.accounts.passwords import hash_password
from devstack.influxdb import InfluxService
from devstack.mosquitto import MosquittoService
from devstack.processes import HOST, ManagedProcess, free_port
from devstack.security import (
    BACKEND_MQTT_USER,
    INFLUX_ADMIN_USER,
    OPS_MQTT_USER,
    DemoSecrets,
    private_dir,
    read_secret,
    write_private,
)

REPO: Final = Path(__file__).resolve().parents[2]
SITE: Final = "chaos"
GATEWAY: Final = "gw-1"
ADMIN_USER: Final = "admin"
INFLUX_DB: Final = "cds"
SHARE_GROUP: Final = "cds-backend"
RECEIPT_TIMEOUT_S: Final = 15.0
BACKEND_START_TIMEOUT_S: Final = 90.0
"""A replica imports the whole web stack; on a busy 2-core machine that alone can take 20 s."""


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class GatewayProcess(ManagedProcess):
    """``python -m gateway run`` with its TOML file; ready once its status page answers."""

    name = "gateway"
    _log_name: ClassVar[str] = "gateway.log"

    def __init__(self, workdir: Path, config_text: str, status_port: int) -> None:
        super().__init__(workdir, auto_ports=False)
        self.config_text = config_text
        self.status_url = f"http://{HOST}:{status_port}/status.json"

    def _write_config(self) -> None:
        write_private(self.workdir / "gateway.toml", self.config_text)

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "gateway", "run", "--config", str(self.workdir / "gateway.toml")]

    def _ready(self) -> bool:
        return _ok(self.status_url)

    def _choose_ports(self) -> None:  # fixed ports: the orchestrator knows them
        return None


class BackendProcess(ManagedProcess):
    """``python -m backend`` (API + MQTT ingest + rollups) configured by ``BACKEND_*`` variables."""

    name = "backend"
    _log_name: ClassVar[str] = "backend.log"

    def __init__(self, workdir: Path, env: dict[str, str], http_port: int) -> None:
        super().__init__(workdir, auto_ports=False)
        self.env = env
        self.url = f"http://{HOST}:{http_port}"

    def _write_config(self) -> None:
        return None

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "backend"]

    def _env(self) -> dict[str, str]:
        return self.env

    def _ready(self) -> bool:
        return _ok(f"{self.url}/health")

    def _choose_ports(self) -> None:
        return None


class Stack:
    """Every server process of one chaos run, in ``workdir``, for the meters ``devices`` on ports under ``link_dir``.

    :meth:`start` brings them up in dependency order and returns once each answers; the fault schedule then kills
    and restarts them through the ManagedProcess methods (``kill()``, ``stop()``, ``start()``).
    """

    def __init__(self, workdir: Path, devices: list[str], link_dir: Path, replicas: int = 2) -> None:
        self.workdir = private_dir(workdir)
        self.devices = devices
        self.link_dir = link_dir
        self.secrets = DemoSecrets(self.workdir / "secrets")
        self.secrets.create()
        self.admin_password = read_secret(self.secrets.admin_password)
        # explicit ports: a ManagedProcess keeps them for good, so configs written now stay right after restarts
        self.influx = InfluxService(self.workdir / "influxdb", free_port(),
                                    admin=(INFLUX_ADMIN_USER, read_secret(self.secrets.influx_admin_password)))
        self.broker = MosquittoService(self.workdir / "mosquitto", free_port(), allow_anonymous=False,
                                       dynamic_security_file=self.secrets.dynamic_security_file)
        status_port = free_port()
        self.gateway = GatewayProcess(self.workdir / "gateway", self._gateway_toml(status_port), status_port)
        self.backends: list[BackendProcess] = []
        sites = self._sites_file()
        password_hash = hash_password(self.admin_password)
        for i in range(1, replicas + 1):
            port = free_port()
            self.backends.append(BackendProcess(self.workdir / f"backend-{i}",
                                                self._backend_env(i, port, sites, password_hash), port))

    @property
    def api(self) -> str:
        """The API of a replica that answers (any replica serves the same data)."""
        return next((b.url for b in self.backends if _ok(f"{b.url}/health")), self.backends[0].url)

    @property
    def ops_password_file(self) -> Path:
        """The password of the broker's read-only ``ops`` user (made by :meth:`start`), for the tap."""
        return self.secrets.mqtt_password(OPS_MQTT_USER)

    def _gateway_toml(self, status_port: int) -> str:
        username = f"{SITE}/{GATEWAY}"
        return (
            f'site = "{SITE}"\ngateway = "{GATEWAY}"\n\n'
            f'[serial]\nports = ["{self.link_dir}/ttyAICSS-*"]\nrescan_s = 1.0\n\n'
            f'[queue]\npath = "{self.workdir / "gateway" / "queue.sqlite3"}"\n'
            f"receipt_timeout_s = {RECEIPT_TIMEOUT_S}\n\n"
            f'[mqtt]\nhost = "{HOST}"\nport = {self.broker.port}\nusername = "{username}"\n'
            f'password_file = "{self.secrets.mqtt_password(username)}"\n\n'
            f'[status]\nbind = "{HOST}"\nport = {status_port}\n'
        )

    def _sites_file(self) -> Path:
        devices = ", ".join(f'"{d}"' for d in self.devices)
        return write_private(
            self.workdir / "sites.toml",
            "# Written by bench/chaos.py: the chaos run's one site and its meters (docs/analytics.md).\n"
            f'[[site]]\nid = "{SITE}"\nname = "Chaos"\ndistributor = "LIGHT SESA"\nsubgroup = "B1"\n'
            'modality = "Convencional"\nicms = "0.18"\npis = "0.0110"\ncofins = "0.0507"\nbilling_day = 0\n'
            f"phases = 2\nnominal_voltage = 127\ndevices = [{devices}]\n",
        )

    def _backend_env(self, index: int, http_port: int, sites: Path, password_hash: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "GATEWAY_"))}
        env.update({
            "BACKEND_HOST": HOST,
            "BACKEND_PORT": str(http_port),
            "BACKEND_MQTT_HOST": HOST,
            "BACKEND_MQTT_PORT": str(self.broker.port),
            "BACKEND_MQTT_CLIENT_ID": f"cds-backend-chaos-{index}",
            "BACKEND_MQTT_SHARE_GROUP": SHARE_GROUP,
            "BACKEND_MQTT_USERNAME": BACKEND_MQTT_USER,
            "BACKEND_MQTT_PASSWORD_FILE": str(self.secrets.mqtt_password(BACKEND_MQTT_USER)),
            "BACKEND_INFLUX_URL": self.influx.url,
            "BACKEND_INFLUX_DB": INFLUX_DB,
            "BACKEND_INFLUX_USERNAME": INFLUX_ADMIN_USER,
            "BACKEND_INFLUX_PASSWORD_FILE": str(self.secrets.influx_admin_password),
            "BACKEND_JWT_SECRET_FILE": str(self.secrets.jwt_secret),
            "BACKEND_USERS": json.dumps([{"username": ADMIN_USER, "role": "admin", "password_hash": password_hash}]),
            "BACKEND_SITES_FILE": str(sites),
            "BACKEND_ANEEL_SYNC_ENABLED": "false",
            "BACKEND_ONS_SYNC_ENABLED": "false",
            "BACKEND_ALERTS_ENABLED": "false",
        })
        return env

    def start(self) -> None:
        """InfluxDB, the broker's users, the broker, the replicas, then the gateway."""
        self.influx.start(timeout=60)
        backend_env = {**os.environ, "BACKEND_MQTT_USERNAME": BACKEND_MQTT_USER,
                       "BACKEND_MQTT_SHARE_GROUP": SHARE_GROUP}
        self.secrets.make_broker_users(SITE, GATEWAY, backend_env, REPO)
        self.broker.start()
        for backend in self.backends:
            backend.start(timeout=BACKEND_START_TIMEOUT_S)
        self.gateway.start(timeout=60)

    def pids(self) -> dict[str, int | None]:
        """Current pid per role (None while a process is down), for the memory figures."""
        out: dict[str, int | None] = {"mosquitto": self.broker.pid, "influxd": self.influx.pid,
                                      "gateway": self.gateway.pid}
        for i, backend in enumerate(self.backends, start=1):
            out[f"backend-{i}"] = backend.pid
        return out

    def stop(self) -> None:
        """Everything down, gateway first (its queue is kept on disk), InfluxDB last."""
        for proc in (self.gateway, *self.backends, self.broker, self.influx):
            proc.stop(timeout=15)
