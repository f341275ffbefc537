"""README's run command, end to end: `python -m devstack --smoke` starts every part (Mosquitto, InfluxDB, fake
ANEEL, simulated meters, gateway, backend) as the user would, and passes only once every meter's readings are
queryable through the REST API.

The same run then proves the demo is secured as a deployment is (``--keep-running`` holds the system up after
the smoke, so the stack starts once): the broker refuses anonymous clients and confines the gateway's credentials
to the gateway's own topics, InfluxDB refuses unauthenticated queries, and nothing in the state folder is open to
the group or to others."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import msgspec
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from devstack.processes import HOST, free_port

REPO = Path(__file__).resolve().parent.parent
SITE, GATEWAY = "casa-1", "gw-1"  # the demo's gateway (devstack/launcher.py)
GRANTED_QOS1 = 1
NOT_AUTHORIZED = 0x87


class LauncherOutput:
    """The launcher's stdout, read line by line in a thread so the test can wait for a line without blocking."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def wait_for(self, *markers: str, timeout: float) -> str | None:
        """The first line containing one of ``markers`` (None at EOF or timeout)."""
        def found() -> str | None:
            return next((line for line in self.lines if any(m in line for m in markers)), None)
        with self._changed:
            self._changed.wait_for(lambda: found() is not None or self._eof, timeout)
            return found()

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self.lines)


@dataclass
class Stack:
    state: Path
    mqtt_port: int
    influx_port: int
    http_port: int
    output: LauncherOutput

    def secret(self, name: str) -> str:
        return (self.state / "secrets" / name).read_text(encoding="utf-8").strip()

    def diagnostics(self) -> str:
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.state / "logs").glob("*")))
        return f"{self.output.text}\n{logs}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One `python -m devstack --smoke --keep-running`: the smoke has passed when this yields."""
    tmp = tmp_path_factory.mktemp("system")
    ports = {name: free_port() for name in ("mqtt", "influx", "http")}
    stderr = (tmp / "launcher.stderr").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "--smoke", "--keep-running", "--timeout", "120",
         "--state-dir", str(tmp / "state"), "--meters", "2", "--period-ms", "500", "--history-days", "2",
         "--http-port", str(ports["http"]), "--status-port", "0", "--mqtt-port", str(ports["mqtt"]),
         "--influx-port", str(ports["influx"]), "--aneel-port", "0", "--ons-port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )
    assert proc.stdout is not None
    stack = Stack(tmp / "state", ports["mqtt"], ports["influx"], ports["http"], LauncherOutput(proc.stdout))
    try:
        verdict = stack.output.wait_for("CDS smoke: OK", "CDS smoke: FALHOU", timeout=240)
        stderr_text = (tmp / "launcher.stderr").read_text()
        assert verdict is not None and "OK" in verdict, f"{stack.diagnostics()}\n{stderr_text}"
        yield stack
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, stack.diagnostics()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stderr.close()


def test_local_system_runs_and_serves_readings(stack: Stack) -> None:
    out = stack.output.text
    assert "CDS está rodando" in out
    assert "leituras consultáveis pela API para todos os medidores" in out
    assert "histórico de demonstração" in out and "kWh" in out
    assert "sem acesso anônimo" in out and "com autenticação" in out  # the banner says how to get in
    # the simulated meter's EEPROM is kept in the state folder (saved at boot): restarting the demo power-cycles it
    # instead of bringing it back as boot 1 under keys the gateway has committed
    images = [msgspec.json.decode(p.read_bytes()) for p in (stack.state / "eeprom").glob("*.json")]
    assert images and all(i["boot_count"] == 1 for i in images), images


class Mqtt5:
    """One MQTT 5 connection that records the broker's CONNACK and SUBACK answers (and retained messages)."""

    def __init__(self, port: int, client_id: str, username: str | None = None, password: str | None = None) -> None:
        self.connack: Any = None
        self.subacks: list[int] | None = None
        self.topics: set[str] = set()
        self._event = threading.Condition()
        self._c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        if username is not None:
            self._c.username_pw_set(username, password)
        self._c.on_connect = self._on_connect
        self._c.on_subscribe = self._on_subscribe
        self._c.on_message = self._on_message
        self._c.on_disconnect = self._on_disconnect
        self.disconnected = False
        self._c.connect(HOST, port, clean_start=True)
        self._c.loop_start()
        with self._event:
            assert self._event.wait_for(lambda: self.connack is not None or self.disconnected, 10), "no CONNACK"

    def _on_connect(self, c: paho.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._event:
            self.connack = reason
            self._event.notify_all()
        if reason.is_failure:
            c.disconnect()  # no automatic retries with refused credentials

    def _on_subscribe(self, c: paho.Client, u: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._event:
            self.subacks = [r.value for r in reasons]
            self._event.notify_all()

    def _on_message(self, c: paho.Client, u: Any, m: paho.MQTTMessage) -> None:
        with self._event:
            self.topics.add(m.topic)
            self._event.notify_all()

    def _on_disconnect(self, c: paho.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._event:
            self.disconnected = True
            self._event.notify_all()

    def subscribe(self, *filters: str) -> list[int] | None:
        """The SUBACK reason codes, one per filter; None when the connection was lost before the SUBACK."""
        with self._event:
            self.subacks = None
        self._c.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        with self._event:
            self._event.wait_for(lambda: self.subacks is not None or self.disconnected, 10)
            return self.subacks

    def wait_message(self, topic: str, timeout: float = 10.0) -> bool:
        with self._event:
            return self._event.wait_for(lambda: topic in self.topics, timeout)

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


def test_demo_broker_refuses_anonymous_clients(stack: Stack) -> None:
    anonymous = Mqtt5(stack.mqtt_port, "anonymous-probe")
    try:
        assert anonymous.connack is not None and anonymous.connack.is_failure, anonymous.connack
    finally:
        anonymous.close()
    # control: the banner's ops user gets in and reads the gateway's retained status
    ops = Mqtt5(stack.mqtt_port, "ops-probe", "ops", stack.secret("mqtt/ops"))
    try:
        assert not ops.connack.is_failure
        assert ops.subscribe("cds/v1/#") == [GRANTED_QOS1]
        assert ops.wait_message(f"cds/v1/{SITE}/{GATEWAY}/status")
    finally:
        ops.close()


def test_demo_gateway_credentials_cannot_subscribe_to_other_gateways_topics(stack: Stack) -> None:
    """The demo gateway's own user and password, on the only client id its user may connect with (taking the
    running gateway's connection over for a moment; it reconnects by itself)."""
    others = [f"cds/v1/{SITE}/gw-2/down/#", "cds/v1/casa-2/gw-1/up/readings", "cds/v1/+/+/up/readings",
              "$share/cds-backend/cds/v1/+/+/up/readings"]
    answers = None
    for _ in range(5):  # the running gateway may take its client id back before our SUBACK: try again
        probe = Mqtt5(stack.mqtt_port, f"cds-gw-{SITE}-{GATEWAY}", f"{SITE}/{GATEWAY}",
                      stack.secret(f"mqtt/{SITE}.{GATEWAY}"))
        try:
            assert not probe.connack.is_failure, probe.connack
            answers = probe.subscribe(f"cds/v1/{SITE}/{GATEWAY}/down/#", *others)
        finally:
            probe.close()
        if answers is not None:
            break
    assert answers == [GRANTED_QOS1] + [NOT_AUTHORIZED] * len(others)


def test_demo_influxdb_refuses_unauthenticated_queries(stack: Stack) -> None:
    url = f"http://{HOST}:{stack.influx_port}"
    assert httpx.get(f"{url}/query", params={"q": "SHOW DATABASES"}, timeout=10).status_code == 401
    assert httpx.post(f"{url}/write", params={"db": "cds"}, content=b"m v=1", timeout=10).status_code == 401
    admin = ("cds-admin", stack.secret("influx-admin-password"))
    r = httpx.get(f"{url}/query", params={"q": "SHOW DATABASES"}, auth=admin, timeout=10)
    assert r.status_code == 200 and ["cds"] in r.json()["results"][0]["series"][0]["values"]
    console = ("cds-console", stack.secret("influx-console-password"))
    r = httpx.post(f"{url}/write", params={"db": "cds"}, content=b"m v=1", auth=console, timeout=10)
    assert r.status_code == 403, r.text  # the console's user is READ-only, refused by InfluxDB itself
    # ... and the backend runs the admin's InfluxQL console through it
    api = f"http://{HOST}:{stack.http_port}"
    credentials = {"username": "admin", "password": stack.secret("admin-password")}
    login = httpx.post(f"{api}/api/v1/auth/token", json=credentials, timeout=10)
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    r = httpx.post(f"{api}/api/v1/consultas/influxql", json={"consulta": "SHOW MEASUREMENTS"}, headers=headers,
                   timeout=30)
    assert r.status_code == 200, r.text


def test_demo_state_folder_is_private(stack: Stack) -> None:
    """Every folder and file the demo wrote, secrets and data alike, is for its owner only (symbolic links, the
    meters' pseudo-terminal names, carry no permissions of their own)."""
    open_to_others: list[str] = []
    checked = 0
    for root, dirs, files in os.walk(stack.state):
        for name in [*dirs, *files]:
            path = Path(root) / name
            try:
                st = path.lstat()
            except FileNotFoundError:  # InfluxDB and Mosquitto rename files while they run
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            checked += 1
            if stat.S_IMODE(st.st_mode) & 0o077:
                open_to_others.append(f"{stat.filemode(st.st_mode)} {path}")
    assert stat.S_IMODE(stack.state.stat().st_mode) == 0o700
    assert checked > 20  # secrets, configs, logs, the gateway's queue, InfluxDB's and Mosquitto's data
    assert not open_to_others, "\n".join(open_to_others)
