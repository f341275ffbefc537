"""deploy/: the compose file is consistent with the backend's settings, and init-secrets.sh + the shipped TLS
listener and the dynamic-security file it generates run on a real broker that a gateway reaches over TLS."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from backend.api.auth import verify_password
from backend.settings import Settings
from devstack.processes import free_port
from protocol import mqtt
from tests.backend.conftest import REPO

COMPOSE = REPO / "deploy" / "compose"
MOSQ = REPO / "deploy" / "mosquitto"


def test_compose_file_matches_backend_settings_and_files() -> None:
    doc = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    services = doc["services"]
    assert services["influxdb"]["image"] == "influxdb:1.8"
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    backends = {name: s for name, s in services.items() if name.startswith("backend")}
    assert len(backends) >= 2
    fields = set(Settings.__struct_fields__)
    client_ids = set()
    for service in backends.values():
        env = service["environment"]
        for key in env:
            name = key.removeprefix("BACKEND_").lower()
            assert name in fields or (name.endswith("_file") and name.removesuffix("_file") in fields), key
        client_ids.add(env["BACKEND_MQTT_CLIENT_ID"])
        Settings.from_env({k: str(v) for k, v in env.items() if not k.endswith("_FILE")})  # values valid
    assert len(client_ids) == len(backends), "replicas need distinct, stable MQTT client ids"
    for volume in services["mosquitto"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith((".", "/")) and "secrets" not in source:
            assert (COMPOSE / source).exists(), source
    assert (COMPOSE / services["backend-1"]["build"]["context"] / services["backend-1"]["build"]["dockerfile"]).exists()


def test_init_secrets_then_gateway_publishes_over_tls_listener(tmp_path: Path, mosquitto_factory: Any,
                                                               wait_for: Any) -> None:
    work = tmp_path / "compose"
    shutil.copytree(COMPOSE, work, ignore=shutil.ignore_patterns("secrets"))
    script = (work / "init-secrets.sh").read_text().replace("$(cd ../.. && pwd)", str(REPO))
    script = script.replace("(cd ../.. &&", f"(cd {REPO} &&")
    (work / "init-secrets.sh").write_text(script)
    out = subprocess.run(["bash", str(work / "init-secrets.sh")], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin:/usr/sbin", "CDS_MQTT_HOSTNAME": "localhost"}).stdout
    admin_pass = re.search(r"API user admin password: (\S+)", out).group(1)  # type: ignore[union-attr]
    secrets = work / "secrets"
    gw_pass = (secrets / "mqtt" / "casa-1.gw-1").read_text().strip()
    assert gw_pass not in out
    users = yaml.safe_load((secrets / "api_users.json").read_text())
    assert verify_password(admin_pass, users[0]["password_hash"])
    assert Settings.from_env({"BACKEND_JWT_SECRET_FILE": str(secrets / "jwt_secret")}).jwt_secret

    # the shipped TLS listener block, with this test's port and certificate folder
    listeners = (MOSQ / "conf.d" / "listeners.conf").read_text()
    tls_block = listeners[listeners.index("listener 8883"):listeners.index("listener 1883")]
    tls_port = free_port()
    tls_block = tls_block.replace("listener 8883", f"listener {tls_port} 127.0.0.1")
    tls_block = tls_block.replace("/etc/mosquitto/certs", str(secrets / "certs"))
    broker = mosquitto_factory(config_extra=tls_block, dynamic_security_file=secrets / "dynamic-security.json",
                               allow_anonymous=False)

    acks: list[Any] = []
    connected = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="cds-gw-casa-1-gw-1", protocol=paho.MQTTv5)
    c.tls_set(ca_certs=str(secrets / "certs" / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
    c.username_pw_set("casa-1/gw-1", gw_pass)
    c.on_connect = lambda cl, u, f, rc, p: connected.set()
    c.on_publish = lambda cl, u, mid, rc, p: acks.append(rc)
    c.connect("localhost", tls_port)
    c.loop_start()
    try:
        assert connected.wait(10)
        c.publish(mqtt.status_topic("casa-1", "gw-1"), b'{"online": true}', qos=1)
        c.publish(mqtt.status_topic("casa-1", "gw-2"), b'{"online": true}', qos=1)
        wait_for(lambda: len(acks) == 2, timeout=10, what="two PUBACKs over TLS")
        assert [a.is_failure for a in acks] == [False, True]
    finally:
        c.disconnect()
        c.loop_stop()
    # the same port refuses a client that does not speak TLS
    plain = paho.Client(CallbackAPIVersion.VERSION2, client_id="plain-gw", protocol=paho.MQTTv5)
    plain.username_pw_set("casa-1/gw-1", gw_pass)
    try:
        rc = plain.connect("127.0.0.1", tls_port)
        plain.loop(timeout=2)
        plain.loop(timeout=2)
        assert not plain.is_connected() or rc != 0
    except (OSError, ConnectionError):
        pass
    assert broker.running


def test_compose_broker_users_match_the_backends_settings_and_the_shipped_security(
    tmp_path: Path, mosquitto_factory: Any,
) -> None:
    """init-secrets.sh gives the broker the backend user and share group compose.yaml configures (the backend
    gets SUBACK 0x01 for its shared subscription with its own password file), and the compose security file is
    the shipped one with the image's paths."""
    shipped = _options(MOSQ / "conf.d" / "security.conf")
    compose = _options(COMPOSE / "mosquitto-security.conf")
    assert shipped["allow_anonymous"] == compose["allow_anonymous"] == "false"
    assert shipped.keys() == compose.keys() == {"allow_anonymous", "plugin", "plugin_opt_config_file"}
    assert Path(shipped["plugin"]).name == Path(compose["plugin"]).name == "mosquitto_dynamic_security.so"
    volumes = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["mosquitto"]["volumes"]
    assert "./mosquitto-security.conf:/etc/mosquitto/conf.d/security.conf:ro" in volumes

    work = tmp_path / "compose"
    shutil.copytree(COMPOSE, work, ignore=shutil.ignore_patterns("secrets"))
    script = (work / "init-secrets.sh").read_text().replace("$(cd ../.. && pwd)", str(REPO))
    (work / "init-secrets.sh").write_text(script.replace("(cd ../.. &&", f"(cd {REPO} &&"))
    subprocess.run(["bash", str(work / "init-secrets.sh")], capture_output=True, text=True, check=True,
                   env={"PATH": "/usr/bin:/bin:/usr/sbin"})
    env = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["backend-1"]["environment"]
    secrets = work / "secrets"
    backend = Settings.from_env({**{k: str(v) for k, v in env.items() if not k.endswith("_FILE")},
                                 "BACKEND_MQTT_PASSWORD_FILE": str(secrets / "mqtt_backend_password")})
    ctrl = (secrets / "mosquitto_ctrl.conf").read_text().split()
    assert ctrl[ctrl.index("-u") + 1] == "cds-admin"
    assert ctrl[ctrl.index("-P") + 1] == (secrets / "mqtt" / "cds-admin").read_text().strip()
    broker = mosquitto_factory(dynamic_security_file=secrets / "dynamic-security.json", allow_anonymous=False)
    subacks: list[int] = []
    done = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=backend.resolved_client_id(), protocol=paho.MQTTv5)
    c.username_pw_set(backend.mqtt_username, backend.mqtt_password)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(
        [(f"$share/{backend.mqtt_share_group}/{mqtt.READINGS_FILTER}", 1), (f"$share/other/{mqtt.READINGS_FILTER}", 1)])
    c.on_subscribe = lambda cl, u, mid, rcs, p: (subacks.extend(r.value for r in rcs), done.set())
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        assert done.wait(10), "no SUBACK"
        assert subacks == [0x01, 0x87]
    finally:
        c.disconnect()
        c.loop_stop()


def _options(path: Path) -> dict[str, str]:
    lines = [line.split(" ", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return {key: value.strip() for key, value in lines}
