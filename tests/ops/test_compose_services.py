"""deploy/compose/compose.yaml brought up without Docker: each service started the way compose starts it, with the
real binaries, and a reading of the gateway that gateways.toml lists stored end to end.

Docker's daemon and the Compose v2 plugin (``docker compose``) are not installable on the development machine,
so the file is run the closest way there is: Mosquitto with the exact files compose mounts (the shipped
mosquitto.conf, listeners.conf, the compose security and paths files, the dynamic-security file copied into the
data folder as the container's command does), InfluxDB with authentication and the admin of secrets/influx.env,
and ``python -m backend`` with backend-1's environment from compose.yaml and the secret files init-secrets.sh made.
What differs is only what a container changes: absolute paths (moved under the test's folder), host names
(127.0.0.1) and ports (free ones). When Debian's ``docker-compose`` (v1) is installed, the file is also validated
by its ``config`` command; v1 predates the Compose Specification's top-level ``name``, so that key is dropped
(and given as the project name) for it.
"""

from __future__ import annotations

import getpass
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from devstack.influxdb import InfluxService, influxd_binary
from devstack.mosquitto import dynamic_security_plugin, mosquitto_binary
from devstack.processes import HOST, ServiceNotInstalledError, free_port
from protocol import mqtt

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_compose_file_passes_docker_compose_config(tmp_path: Path) -> None:
    work = tmp_path / "compose"
    shutil.copytree(COMPOSE, work, ignore=shutil.ignore_patterns("secrets"))
    # the files compose reads at `config` time (env_file, secrets): present, empty
    (work / "secrets" / "certs").mkdir(parents=True)
    for name in ("influx.env", "jwt_secret", "mqtt_backend_password", "influx_password", "api_users.json"):
        (work / "secrets" / name).touch()
    doc = _compose()
    project = doc.pop("name")
    (work / "compose.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    # the copy's relative paths (../mosquitto, context ../..) must still point into the repository
    (tmp_path / "mosquitto").symlink_to(REPO / "deploy" / "mosquitto")
    out = subprocess.run(["docker-compose", "-f", str(work / "compose.yaml"), "-p", project, "config"],
                         capture_output=True, text=True, cwd=work)  # fmt: skip
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert set(resolved["services"]) == {"mosquitto", "influxdb", "backend-1", "backend-2"}
    assert resolved["services"]["backend-2"]["environment"]["BACKEND_ROLLUP_ENABLED"] == "false"


@pytest.fixture
def secrets(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """init-secrets.sh run on a copy of deploy/compose: (the copy's secrets folder, its output)."""
    work = tmp_path / "compose"
    shutil.copytree(COMPOSE, work, ignore=shutil.ignore_patterns("secrets"))
    # init-secrets.sh runs the backend's commands from ../.. of its folder: point the copy at the repository
    script = (work / "init-secrets.sh").read_text().replace("$(cd ../.. && pwd)", str(REPO))
    (work / "init-secrets.sh").write_text(script.replace("(cd ../.. &&", f"(cd {REPO} &&"))
    out = subprocess.run(["bash", str(work / "init-secrets.sh")], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin:/usr/sbin", "PYTHON": sys.executable,
                              "CDS_MQTT_HOSTNAME": "localhost"}, cwd=work).stdout  # fmt: skip
    yield work / "secrets", out


def _mosquitto_config(root: Path, secrets: Path, tls_port: int, plain_port: int) -> Path:
    """The files compose mounts into the container, at the same relative places under ``root``."""
    service = _compose()["services"]["mosquitto"]
    moves = {"/etc/mosquitto": str(root / "etc"), "/var/lib/mosquitto": str(root / "data"),
             "/run/mosquitto": str(root / "run"), "/var/log/mosquitto": str(root / "log"),
             # the plugin where the image has it -> where this machine's package put it
             "/usr/lib/mosquitto_dynamic_security.so": str(dynamic_security_plugin())}  # fmt: skip
    for folder in list(moves.values())[:4]:
        Path(folder).mkdir(parents=True, exist_ok=True)

    def moved(text: str) -> str:
        for old, new in moves.items():
            text = text.replace(old, new)
        # the ports: compose publishes 8883 and keeps 1883 inside; here both on free ports of 127.0.0.1
        text = text.replace("listener 8883", f"listener {tls_port} 127.0.0.1")
        text = text.replace("listener 1883", f"listener {plain_port} 127.0.0.1")
        # the container starts as root and drops to its mosquitto user; here, stay the user running the test
        return re.sub(r"^user .*$", f"user {getpass.getuser()}", text, flags=re.MULTILINE)

    for volume in service["volumes"]:
        source, _, target = volume.partition(":")
        target = target.removesuffix(":ro")
        if not source.startswith((".", "/")):
            continue  # a named volume: the data folder above
        src = (COMPOSE / source) if "secrets" not in source else secrets.parent / source
        dest = Path(moved(target))
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest)
        elif src.suffix == ".conf" or src.name == "mosquitto.conf":
            dest.write_text(moved(src.read_text()))
        else:
            shutil.copy(src, dest)
    # the container's command: install the dynamic-security file into the data volume at every start
    command = " ".join(service["command"][2:])
    dynsec = r"install .* /etc/mosquitto/dynamic-security\.json\s+/var/lib/mosquitto/dynamic-security\.json"
    assert re.search(dynsec, command), command
    shutil.copy(root / "etc" / "dynamic-security.json", root / "data" / "dynamic-security.json")
    assert "exec mosquitto -c /etc/mosquitto/mosquitto.conf" in command
    return root / "etc" / "mosquitto.conf"


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "exited"
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def _backend_env(secrets: Path, mqtt_port: int, influx_url: str, port: int) -> dict[str, str]:
    """backend-1's environment from compose.yaml, with the container's addresses and secret paths moved."""
    service = _compose()["services"]["backend-1"]
    env = {k: str(v) for k, v in service["environment"].items()}
    files = {f"/run/secrets/{name}": _compose()["secrets"][name]["file"] for name in service["secrets"]}
    for key, value in env.items():
        if value in files:
            env[key] = str(secrets.parent / files[value])
    assert env["BACKEND_MQTT_HOST"] == "mosquitto" and env["BACKEND_INFLUX_URL"] == "http://influxdb:8086"
    env.update({"BACKEND_MQTT_HOST": HOST, "BACKEND_MQTT_PORT": str(mqtt_port), "BACKEND_INFLUX_URL": influx_url,
                "BACKEND_HOST": HOST, "BACKEND_PORT": str(port)})  # fmt: skip
    return env


def test_compose_services_started_like_compose_store_a_gateways_reading(tmp_path: Path,
                                                                         secrets: tuple[Path, str]) -> None:
    try:
        mosquitto, influxd = mosquitto_binary(), influxd_binary()
    except ServiceNotInstalledError as exc:
        pytest.skip(str(exc))
    secret_dir, _ = secrets
    tls_port, plain_port = free_port(), free_port()
    conf = _mosquitto_config(tmp_path / "mosquitto", secret_dir, tls_port, plain_port)
    procs: list[subprocess.Popen[bytes]] = []
    influx_env = dict(line.split("=", 1) for line in (secret_dir / "influx.env").read_text().splitlines())
    influx_service = _compose()["services"]["influxdb"]["environment"]
    assert influx_service["INFLUXDB_HTTP_AUTH_ENABLED"] == "true"
    influx = InfluxService(tmp_path / "influx", admin=(influx_service["INFLUXDB_ADMIN_USER"],
                                                      influx_env["INFLUXDB_ADMIN_PASSWORD"]))  # fmt: skip
    assert Path(influxd).exists() and Path(mosquitto).exists()
    try:
        procs.append(subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))  # fmt: skip
        _wait_port(plain_port, procs[0])
        _wait_port(tls_port, procs[0])
        influx.start(timeout=60)
        # Port 0, read back from uvicorn's log: a free port chosen here could be taken before the backend binds it.
        env = _backend_env(secret_dir, plain_port, influx.url, 0)
        with open(tmp_path / "backend.log", "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "backend"], cwd=REPO, env={"PATH": "/usr/bin:/bin",
                                          **env}, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        api_port = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = (tmp_path / "backend.log").read_text(errors="replace")
            assert procs[1].poll() is None, text[-3000:]
            if not api_port and (bound := re.search(rf"Uvicorn running on http://{re.escape(HOST)}:(\d+)", text)):
                api_port = int(bound[1])
            try:
                if api_port and httpx.get(f"http://{HOST}:{api_port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise TimeoutError("backend not ready: " + (tmp_path / "backend.log").read_text()[-3000:])

        # the gateway of gateways.toml, with its generated password, over the published TLS listener
        first = tomllib.loads((COMPOSE / "gateways.toml").read_text())["gateways"][0]
        site, gw = first["site"], first["gateway"]
        receipts: list[mqtt.Receipt] = []
        subscribed = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"cds-gw-{site}-{gw}", protocol=paho.MQTTv5)
        c.tls_set(ca_certs=str(secret_dir / "certs" / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
        c.username_pw_set(f"{site}/{gw}", (secret_dir / "mqtt" / f"{site}.{gw}").read_text().strip())
        c.on_connect = lambda cl, *a: cl.subscribe(mqtt.receipts_topic(site, gw), qos=1)
        c.on_subscribe = lambda *a: subscribed.set()
        c.on_message = lambda cl, u, msg: receipts.append(mqtt.receipt_decoder.decode(msg.payload))
        c.connect("localhost", tls_port)
        c.loop_start()
        try:
            assert subscribed.wait(10)
            now = int(time.time() * 1000)
            reading = mqtt.Reading(device="a1c5500000000c01", boot=1, seq=7, ts=now, vrms=127.0, irms=1.0, p=120.0,
                                   s=127.0, pf=0.94, freq=60.0, energy_mwh=1234)  # fmt: skip
            batch = mqtt.ReadingBatch(site=site, gateway=gw, readings=[reading], batch_id="compose-1")
            c.publish(mqtt.readings_topic(site, gw), mqtt.json_encoder.encode(batch), qos=1)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any("compose-1" in r.stored for r in receipts):
                time.sleep(0.05)
            assert any("compose-1" in r.stored for r in receipts), receipts
        finally:
            c.disconnect()
            c.loop_stop()
        rows = influx.rows(f'SELECT seq, p FROM "{env["BACKEND_INFLUX_DB"]}"."raw"."readings" '
                           "WHERE device = 'a1c5500000000c01'", db=env["BACKEND_INFLUX_DB"])  # fmt: skip
        assert [(r["seq"], r["p"]) for r in rows] == [(7, 120.0)]
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        influx.stop()
