"""Run the whole CDS system on one machine with local defaults: ``python -m devstack`` (README's run command).

Starts, each as its own process and in this order: Mosquitto and InfluxDB (Debian's binaries, our configs, data
kept in the state folder so a restart resumes), a fake ANEEL CKAN server and a fake ONS (portal and files; no
internet needed), N simulated meters on pseudo-terminals, the gateway reading them, and the backend (ingest, API,
dashboard). It prints where to look, restarts any child that dies (the product's processes resume where they were),
and stops everything on Ctrl-C / SIGTERM.

The local run is secured as a deployment is (:mod:`devstack.security`): the broker admits no anonymous client and
confines the gateway to its own topics, InfluxDB requires authentication, every part reads its password from a
file of the state folder, and the state folder is owner-only (umask 077 for the launcher and its children).

``--smoke`` is the self-test used by the test suite: it waits until readings from every meter, and the grid data
pulled from the fake ONS, are queryable through the REST API, prints what it saw and exits 0 (1 if that did not
happen within ``--timeout``). With ``--keep-running`` the system stays up after it until Ctrl-C / SIGTERM, so a test
can look at the running system the smoke has just checked.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import httpx

from devstack.influxdb import InfluxService
from devstack.mosquitto import MosquittoService
from devstack.security import (
    BACKEND_MQTT_USER,
    INFLUX_ADMIN_USER,
    INFLUX_CONSOLE_USER,
    OPS_MQTT_USER,
    PRIVATE_UMASK,
    DemoSecrets,
    private_dir,
    read_secret,
    write_private,
)
from devstack.smoke import SmokeTest
from protocol.mqtt import MAX_BATCH, Reading, ReadingBatch, json_encoder
from sim.loads import Household
from sim.solar import solar_household

REPO: Final = Path(__file__).resolve().parent.parent
SITE: Final = "casa-1"
GATEWAY: Final = "gw-1"
ADMIN_USER: Final = "admin"


def _port(preferred: int) -> int:
    """``preferred`` when it is free on 127.0.0.1, else any free port (a system-wide broker may hold 1883)."""
    for candidate in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


@dataclass
class Child:
    """A supervised child process; restarted with backoff when it exits on its own."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.log is not None:
            self.log.close()


class System:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state = private_dir(Path(args.state_dir).resolve())
        self.logs = private_dir(self.state / "logs")
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.python = sys.executable
        self.secrets = DemoSecrets(self.state / "secrets")
        self.secrets.create()
        self.broker = MosquittoService(self.state / "mosquitto", _port(args.mqtt_port), allow_anonymous=False,
                                       dynamic_security_file=self.secrets.dynamic_security_file)
        self.influx = InfluxService(self.state / "influxdb", _port(args.influx_port),
                                    admin=(INFLUX_ADMIN_USER, read_secret(self.secrets.influx_admin_password)))
        self.backend_port = _port(args.http_port)
        self.status_port = _port(args.status_port)
        self.aneel_port = _port(args.aneel_port)
        self.ons_port = _port(args.ons_port)
        self.password = read_secret(self.secrets.admin_password)
        self.devices: list[str] = []

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "GATEWAY_"))}
        env.update(extra)
        return env

    def _child(self, name: str, argv: list[str], **env: str) -> Child:
        child = Child(name, argv, self._env(**env), self.logs / f"{name}.log")
        child.start()
        self.children.append(child)
        return child

    # --- the parts -------------------------------------------------------------------------------------------

    def start_meters(self) -> None:
        link_dir = self.state / "meters"
        argv = [self.python, "-m", "sim", "meters", "--count", str(self.args.meters), "--seed", str(self.args.seed),
                "--voltage", str(self.args.voltage), "--period-ms", str(self.args.period_ms),
                "--link-dir", str(link_dir), "--solar", str(self.solar_meters), "--pv-kwp", str(self.args.pv_kwp),
                "--firmware", str(self.args.firmware_meters), "--eeprom-dir", str(self.state / "eeprom")]
        # The meters print one METER line each on stdout: read those, then let the rest go to the log.
        log = (self.logs / "meters.log").open("ab")
        proc = subprocess.Popen(argv, cwd=REPO, env=self._env(), stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True)
        assert proc.stdout is not None
        while len(self.devices) < self.args.meters:
            line = proc.stdout.readline().decode()
            if not line:
                raise RuntimeError(f"the simulator exited early; see {self.logs / 'meters.log'}")
            fields = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
            if line.startswith("METER"):
                self.devices.append(fields["device"])
        threading.Thread(target=self._drain, args=(proc.stdout, log), daemon=True).start()
        self.children.append(Child("meters", argv, self._env(), self.logs / "meters.log", proc=proc, log=log))

    @staticmethod
    def _drain(stream: IO[bytes], log: IO[bytes]) -> None:
        for chunk in iter(lambda: stream.read(4096), b""):
            log.write(chunk)

    def gateway_config(self) -> Path:
        username = f"{SITE}/{GATEWAY}"
        return write_private(
            self.state / "gateway.toml",
            f'site = "{SITE}"\ngateway = "{GATEWAY}"\n\n'
            f'[serial]\nports = ["{self.state / "meters"}/ttyAICSS-*"]\nrescan_s = 1.0\n\n'
            f'[queue]\npath = "{self.state / "gateway-queue.sqlite3"}"\n\n'
            f'[mqtt]\nhost = "{self.broker.host}"\nport = {self.broker.port}\nusername = "{username}"\n'
            f'password_file = "{self.secrets.mqtt_password(username)}"\n\n'
            f'[status]\nbind = "127.0.0.1"\nport = {self.status_port}\n',
        )

    def sites_file(self) -> Path:
        devices = ", ".join(f'"{d}"' for d in self.devices)
        return write_private(
            self.state / "sites.toml",
            "# Written by python -m devstack for the local demo; see docs/analytics.md.\n"
            f'[[site]]\nid = "{SITE}"\nname = "Casa de demonstração"\ndistributor = "LIGHT SESA"\n'
            'subgroup = "B1"\nmodality = "Convencional"\nicms = "0.18"\npis = "0.0110"\ncofins = "0.0507"\n'
            f"billing_day = 0\nphases = 2\nnominal_voltage = {self.args.voltage}\ndevices = [{devices}]\n",
        )

    def password_hash(self) -> str:
        """The demo admin's password hashed by the backend's own CLI, as an operator would provision a user."""
        done = subprocess.run([sys.executable, "-m", "backend", "hash-password", "--stdin"], input=self.password + "\n",
                              capture_output=True, text=True, check=True, cwd=REPO, timeout=60)
        return done.stdout.strip()

    def backend_env(self) -> dict[str, str]:
        users = [{"username": ADMIN_USER, "role": "admin", "password_hash": self.password_hash()}]
        return {
            "BACKEND_HOST": "127.0.0.1",
            "BACKEND_PORT": str(self.backend_port),
            "BACKEND_MQTT_HOST": self.broker.host,
            "BACKEND_MQTT_PORT": str(self.broker.port),
            "BACKEND_MQTT_CLIENT_ID": "cds-backend-local-1",
            "BACKEND_MQTT_USERNAME": BACKEND_MQTT_USER,
            "BACKEND_MQTT_PASSWORD_FILE": str(self.secrets.mqtt_password(BACKEND_MQTT_USER)),
            "BACKEND_INFLUX_URL": self.influx.url,
            "BACKEND_INFLUX_USERNAME": INFLUX_ADMIN_USER,
            "BACKEND_INFLUX_PASSWORD_FILE": str(self.secrets.influx_admin_password),
            "BACKEND_INFLUX_READONLY_USERNAME": INFLUX_CONSOLE_USER,
            "BACKEND_INFLUX_READONLY_PASSWORD_FILE": str(self.secrets.influx_console_password),
            "BACKEND_JWT_SECRET_FILE": str(self.secrets.jwt_secret),
            "BACKEND_USERS": json.dumps(users),
            "BACKEND_SITES_FILE": str(self.sites_file()),
            "BACKEND_ANEEL_BASE_URL": f"http://127.0.0.1:{self.aneel_port}",
            "BACKEND_ONS_BASE_URL": f"http://127.0.0.1:{self.ons_port}",
            # The demo's one gateway carries every meter: an operator would raise its limits the same way
            # (docs/security.md), else a demo of more than 64 meters would see the rest refused as a flood.
            "BACKEND_PROVISIONING_MAX_DEVICES_PER_GATEWAY": str(max(64, self.args.meters)),
            "BACKEND_PROVISIONING_NEW_DEVICES_PER_HOUR": str(max(16, self.args.meters)),
        }

    def start(self) -> None:
        print("CDS: iniciando Mosquitto e InfluxDB ...", flush=True)
        self.secrets.make_broker_users(SITE, GATEWAY, self._env(BACKEND_MQTT_USERNAME=BACKEND_MQTT_USER), REPO)
        self.broker.start()
        self.influx.start(timeout=60)
        self._child("aneel-fake", [self.python, "-m", "devstack.aneel_fake", "--port", str(self.aneel_port)])
        self._child("ons-fake", [self.python, "-m", "devstack.ons_fake", "--port", str(self.ons_port)])
        self.start_meters()
        self._child("gateway", [self.python, "-m", "gateway", "run", "--config", str(self.gateway_config())])
        self._child("backend", [self.python, "-m", "backend"], **self.backend_env())

    def wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            try:
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            self.supervise_once()
            self.stopping.wait(0.2)
        raise RuntimeError(f"{url} did not answer within {timeout:.0f} s; logs in {self.logs}")

    def banner(self) -> None:
        api = f"http://127.0.0.1:{self.backend_port}"
        print(
            "\nCDS está rodando (dados em {state}):\n"
            "  Painel (dashboard):       {api}/painel/   usuário {user}, senha {pw}\n"
            "  API REST e documentação:  {api}/docs\n"
            "  Página de status do gateway: http://127.0.0.1:{sp}/\n"
            "  Broker MQTT:              {bh}:{bp}   (sem acesso anônimo; senhas em {mqtt_pw}/)\n"
            "      mosquitto_sub -h {bh} -p {bp} -u {ops} -P \"$(cat {ops_pw})\" -t 'cds/v1/#' -v\n"
            "  InfluxDB (API v1):        {iu}   (banco 'cds', com autenticação)\n"
            "      somente leitura: usuário {ro}, senha em {ro_pw}\n"
            "      administrador:   usuário {adm}, senha em {adm_pw}\n"
            "  ANEEL simulada:           http://127.0.0.1:{ap}/api/3/action/datastore_search\n"
            "  ONS simulado:             http://127.0.0.1:{op}/api/3/action/package_show?id=balanco-energia-subsistema\n"
            "  Medidores simulados:      {devs}\n"
            "  Logs:                     {logs}\n"
            "Ctrl-C para parar.".format(
                state=self.state, api=api, user=ADMIN_USER, pw=self.password, sp=self.status_port,
                bh=self.broker.host, bp=self.broker.port, mqtt_pw=self.secrets.mqtt_password(OPS_MQTT_USER).parent,
                ops=OPS_MQTT_USER, ops_pw=self.secrets.mqtt_password(OPS_MQTT_USER), iu=self.influx.url,
                ro=INFLUX_CONSOLE_USER, ro_pw=self.secrets.influx_console_password, adm=INFLUX_ADMIN_USER,
                adm_pw=self.secrets.influx_admin_password, ap=self.aneel_port,
                op=self.ons_port,
                devs=", ".join(self.devices), logs=self.logs,
            ),
            flush=True,
        )

    def supervise_once(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is None or child.proc.poll() is None or self.stopping.is_set():
                continue
            if child.next_start == 0.0:
                child.restarts += 1
                child.next_start = now + min(30.0, 0.5 * 2 ** min(child.restarts, 6))
                print(f"CDS: {child.name} saiu (código {child.proc.returncode}); reiniciando "
                      f"(log: {child.log_path})", flush=True)
            elif now >= child.next_start:
                child.next_start = 0.0
                if child.log is not None:
                    child.log.close()
                child.start()

    def token(self) -> str:
        api = f"http://127.0.0.1:{self.backend_port}"
        r = httpx.post(f"{api}/api/v1/auth/token", json={"username": ADMIN_USER, "password": self.password},
                       timeout=10)
        r.raise_for_status()
        return str(r.json()["access_token"])

    @property
    def solar_meters(self) -> int:
        """How many of the demo meters (the last ones) have a PV roof: they import at night and export at noon."""
        return max(0, min(int(self.args.solar_meters), int(self.args.meters) - 1))

    def _history_house(self, index: int) -> Household:
        seed = f"{self.args.seed}/history/{index}"
        if index >= self.args.meters - self.solar_meters:
            return solar_household(seed, self.args.voltage, self.args.pv_kwp)
        return Household(seed, self.args.voltage)

    def seed_history(self) -> int:
        """Give the dashboard something to show from the first minute: ``--history-days`` of one-minute readings
        per meter (boot 0, before the live meters' first boot), sent through the HTTP ingest
        (``POST /api/v1/aicss/dados``) exactly as a meter without a gateway would. Done once per state folder:
        the readings' timestamps come from the clock, so a second run would not overwrite the first."""
        days = self.args.history_days
        marker = self.state / "history-seeded"
        if days <= 0 or marker.exists():
            return 0
        api = f"http://127.0.0.1:{self.backend_port}/api/v1/aicss/dados"
        headers = {"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"}
        end_s = int(time.time()) // 60 * 60 - 120
        start_s = end_s - int(days * 86400)
        sent = 0
        with httpx.Client(timeout=60) as client:
            for index, device in enumerate(self.devices):
                house = self._history_house(index)
                import_mwh = export_mwh = 0.0
                batch: list[Reading] = []
                for seq, t in enumerate(range(start_s, end_s, 60), start=1):
                    x = house.sample(t)
                    # W over 60 s -> mWh, into the register of the direction the energy flowed (as the meter does)
                    if x.p >= 0:
                        import_mwh += x.p * 60 / 3.6
                    else:
                        export_mwh -= x.p * 60 / 3.6
                    batch.append(Reading(device=device, boot=0, seq=seq, ts=t * 1000, vrms=round(x.vrms, 2),
                                         irms=round(x.irms, 3), p=round(x.p, 1), s=round(x.s, 1),
                                         pf=round(max(-1.0, min(1.0, x.pf)), 3), freq=round(x.freq, 3),
                                         energy_mwh=int(import_mwh), energy_export_mwh=int(export_mwh)))
                    if len(batch) == MAX_BATCH or t + 60 >= end_s:
                        body = json_encoder.encode(ReadingBatch(site=SITE, gateway="historico", readings=batch))
                        client.post(api, content=body, headers=headers).raise_for_status()
                        sent += len(batch)
                        batch = []
        write_private(marker, f"{sent} readings, {days} days\n")
        return sent

    def smoke(self) -> bool:
        """The self-test of ``--smoke`` (:mod:`devstack.smoke`) against this system."""
        return SmokeTest(api=f"http://127.0.0.1:{self.backend_port}", status_page=f"http://127.0.0.1:{self.status_port}/",
                         site=SITE, devices=self.devices, token=self.token, supervise=self.supervise_once,
                         logs=self.logs, timeout=self.args.timeout, history=self.args.history_days > 0).run()

    def stop(self) -> None:
        self.stopping.set()
        for child in reversed(self.children):
            child.stop()
        self.influx.stop()
        self.broker.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state-dir", default=str(REPO / "var" / "local"), help="data, configs and logs")
    ap.add_argument("--meters", type=int, default=3)
    ap.add_argument("--seed", default="1")
    ap.add_argument("--voltage", type=int, choices=(127, 220), default=127)
    ap.add_argument("--solar-meters", type=int, default=1,
                    help="the last N meters of the demo site are solar households (never all of them: one meter "
                         "always stays a plain household)")
    ap.add_argument("--pv-kwp", type=float, default=4.0, help="PV array size of each solar meter, kWp")
    ap.add_argument("--firmware-meters", type=int, default=1,
                    help="the first N meters run the real firmware ELF in simavr when the toolchain is installed "
                         "(simulated meters otherwise)")
    ap.add_argument("--period-ms", type=int, default=1000)
    ap.add_argument("--mqtt-port", type=int, default=18830)
    ap.add_argument("--influx-port", type=int, default=18086)
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--status-port", type=int, default=8080)
    ap.add_argument("--aneel-port", type=int, default=18765)
    ap.add_argument("--ons-port", type=int, default=18766)
    ap.add_argument("--history-days", type=float, default=28.0,
                    help="days of one-minute demo history per meter sent at first start (0 = none)")
    ap.add_argument("--smoke", action="store_true", help="exit 0 once readings are queryable (self-test)")
    ap.add_argument("--keep-running", action="store_true",
                    help="with --smoke: keep the system running after the self-test until Ctrl-C / SIGTERM")
    ap.add_argument("--timeout", type=float, default=120.0, help="--smoke deadline, seconds")
    args = ap.parse_args(argv)

    os.umask(PRIVATE_UMASK)  # before the first file: the state folder and every child's files are owner-only
    system = System(args)
    signal.signal(signal.SIGTERM, lambda *_: system.stopping.set())
    try:
        system.start()
        system.wait_http(f"http://127.0.0.1:{system.backend_port}/health", 90)
        system.wait_http(f"http://127.0.0.1:{system.status_port}/status.json", 60)
        seeded = system.seed_history()
        if seeded:
            print(f"CDS: histórico de demonstração: {seeded} leituras de {args.history_days} dias enviadas "
                  "pela API HTTP", flush=True)
        system.banner()
        if args.smoke:
            if not system.smoke():
                return 1
            print("CDS smoke: OK", flush=True)
            if not args.keep_running:
                return 0
        while not system.stopping.is_set():
            system.supervise_once()
            system.stopping.wait(1.0)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        print("CDS: parando ...", flush=True)
        system.stop()
