"""Issue 10, finding 1 on a real broker: nobody but the backend can join the backend's share group.

With Mosquitto 2.0.11 and an ACL file, a gateway (or ``ops``) that subscribes to
``$share/<group>/cds/v1/+/+/up/readings`` with a persistent session becomes a member of the group and the broker
drops its round-robin share of everyone's readings after PUBACKing the senders (the control test below measures
it). The shipped broker runs the dynamic-security plugin with users made by ``python -m backend broker-users``:
the SUBSCRIBE is refused (SUBACK 0x87) and every reading reaches InfluxDB, whether the attacker stays online or
leaves its session behind.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from devstack.influxdb import InfluxService
from devstack.mosquitto import MosquittoService
from protocol import mqtt
from protocol.mqtt import ConfigResult, DeviceInfo, GatewayStatus
from tests.backend.conftest import REPO, batch_bytes, count_points, device_id, make_settings, reading, token
from tests.backend.secured_broker import (
    ADMIN_USER,
    BACKEND_USER,
    OPS_USER,
    Probe,
    gateway_client_id,
    start_secured_broker,
    write_gateway_list,
)

NOT_AUTHORIZED = 0x87
ACCEPTED = (0x00, 0x10)  # PUBACK "success" and "no matching subscribers"


def _stored_seqs(influx: InfluxService, db: str) -> set[int]:
    return {int(r["seq"]) for r in influx.rows(f'SELECT seq FROM "{db}"."raw"."readings"', db=db)}


@pytest.mark.asyncio
@pytest.mark.parametrize("attacker", ["gateway", "ops"])
@pytest.mark.parametrize("leaves", [False, True], ids=["online", "offline_after_subscribing"])
async def test_share_group_join_refused_and_all_100_readings_stored(
    attacker: str, leaves: bool, mosquitto_factory: Callable[..., MosquittoService], influx: InfluxService,
    unique_id: str, tmp_path: Path, publisher_factory: Any, wait_for_async: Any,
) -> None:
    site, group = unique_id, f"g-{unique_id}"
    secured = start_secured_broker(mosquitto_factory, tmp_path / "users", group, [(site, "gw1"), (site, "gw2")])
    broker = secured.broker
    settings = make_settings(broker, influx, unique_id, mqtt_username=BACKEND_USER,
                             mqtt_password=secured.password(BACKEND_USER))
    app = create_app(settings)
    async with AsyncTestClient(app):
        assert await app.state.services.ingest.bridge.wait_connected(10)
        user, client_id = ((f"{site}/gw1", gateway_client_id(site, "gw1")) if attacker == "gateway"
                           else (OPS_USER, f"ops-{unique_id}"))
        probe = Probe(broker, user, secured.password(user), client_id, session_expiry=3600)
        try:
            assert not probe.refused
            assert probe.subscribe(f"$share/{group}/{mqtt.READINGS_FILTER}") == [NOT_AUTHORIZED]
            if leaves:
                probe.close()  # the session (and any subscription it had) stays on the broker
            sender = publisher_factory(broker, client_id=gateway_client_id(site, "gw2"), username=f"{site}/gw2",
                                       password=secured.password(f"{site}/gw2"))
            start = int(time.time() * 1000) - 200_000
            for seq in range(1, 101):  # one reading per message: the broker splits a group message by message
                sender.publish(mqtt.readings_topic(site, "gw2"),
                               batch_bytes(site, "gw2", [reading(device_id(7), seq, start + seq * 1000)]))
            sender.wait_all_acked()
            assert sender.refused == []
            await wait_for_async(lambda: count_points(influx, unique_id) >= 100, timeout=30,
                                 what=lambda: f"100 readings stored (have {count_points(influx, unique_id)})")
            await wait_for_async(lambda: app.state.services.ingest.unacked == 0, timeout=10, what="all acked")
            assert _stored_seqs(influx, unique_id) == set(range(1, 101))
            assert probe.topics() == []
        finally:
            probe.close()


@pytest.mark.asyncio
async def test_share_group_join_loses_readings_with_an_acl_file_control(
    mosquitto_factory: Callable[..., MosquittoService], influx: InfluxService, unique_id: str, tmp_path: Path,
    publisher_factory: Any, wait_for_async: Any,
) -> None:
    """Control for the test above: the ACL file CDS shipped before (same rules) lets the attack through, so the
    test above would see the loss if the plugin did not stop it."""
    site, group = unique_id, f"g-{unique_id}"
    passwd = tmp_path / "passwd"
    passwd.touch(mode=0o600)
    for user, password in {BACKEND_USER: "b", f"{site}/gw1": "g1", f"{site}/gw2": "g2"}.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True, capture_output=True)
    acl = tmp_path / "acl"
    acl.write_text("pattern write cds/v1/%u/up/readings\npattern read cds/v1/%u/down/#\n\n"
                   "user backend\ntopic read cds/v1/+/+/up/#\ntopic read cds/v1/+/+/status\n"
                   "topic read cds/v1/+/+/devices/+\ntopic readwrite cds/v1/_backend/#\n", encoding="utf-8")
    broker = mosquitto_factory(acl_file=acl, password_file=passwd, allow_anonymous=False)
    app = create_app(make_settings(broker, influx, unique_id, mqtt_username=BACKEND_USER, mqtt_password="b"))
    async with AsyncTestClient(app):
        assert await app.state.services.ingest.bridge.wait_connected(10)
        probe = Probe(broker, f"{site}/gw1", "g1", gateway_client_id(site, "gw1"), session_expiry=3600)
        try:
            assert probe.subscribe(f"$share/{group}/{mqtt.READINGS_FILTER}") == [0x01]  # granted
            sender = publisher_factory(broker, username=f"{site}/gw2", password="g2")
            start = int(time.time() * 1000) - 200_000
            for seq in range(1, 105):
                sender.publish(mqtt.readings_topic(site, "gw2"),
                               batch_bytes(site, "gw2", [reading(device_id(7), seq, start + seq * 1000)]))
            sender.wait_all_acked()
            assert sender.refused == []
            # Mosquitto delivers in publish order and hands a group's messages round-robin, so once one of the
            # last four is stored and acknowledged, every earlier message the backend was given is too.
            await wait_for_async(lambda: _stored_seqs(influx, unique_id) & set(range(101, 105)), timeout=30,
                                 what="a reading published after the first 100")
            await wait_for_async(lambda: app.state.services.ingest.unacked == 0, timeout=10, what="all acked")
            lost = 100 - len(_stored_seqs(influx, unique_id) & set(range(1, 101)))
            assert lost >= 30, f"expected the attacker's share to be dropped, lost {lost} of 100"
            assert probe.topics() == []
        finally:
            probe.close()


@pytest.mark.asyncio
async def test_gateway_cannot_take_over_a_backend_session_by_its_client_id(
    mosquitto_factory: Callable[..., MosquittoService], influx: InfluxService, unique_id: str, tmp_path: Path,
    publisher_factory: Any, wait_for_async: Any,
) -> None:
    """Mosquitto 2.0.11 gives a persistent session, share-group membership included, to whoever connects with
    its client id, whatever the user: each gateway user is therefore bound to its own client id."""
    site, group = unique_id, f"g-{unique_id}"
    secured = start_secured_broker(mosquitto_factory, tmp_path / "users", group, [(site, "gw1"), (site, "gw2")])
    broker = secured.broker
    settings = make_settings(broker, influx, unique_id, mqtt_username=BACKEND_USER,
                             mqtt_password=secured.password(BACKEND_USER))
    app = create_app(settings)
    async with AsyncTestClient(app):
        assert await app.state.services.ingest.bridge.wait_connected(10)
        thief = Probe(broker, f"{site}/gw1", secured.password(f"{site}/gw1"), settings.resolved_client_id(),
                      session_expiry=3600)
        neighbour = Probe(broker, f"{site}/gw1", secured.password(f"{site}/gw1"), gateway_client_id(site, "gw2"))
        thief.close()
        neighbour.close()
        assert thief.refused and neighbour.refused
        assert app.state.services.ingest.bridge.connected
        sender = publisher_factory(broker, client_id=gateway_client_id(site, "gw2"), username=f"{site}/gw2",
                                   password=secured.password(f"{site}/gw2"))
        start = int(time.time() * 1000) - 100_000
        for seq in range(1, 21):
            sender.publish(mqtt.readings_topic(site, "gw2"),
                           batch_bytes(site, "gw2", [reading(device_id(8), seq, start + seq * 1000)]))
        sender.wait_all_acked()
        await wait_for_async(lambda: count_points(influx, unique_id) >= 20, timeout=20, what="20 readings stored")
        assert app.state.services.ingest.bridge.connects == 1  # never kicked off its session


def test_gateway_confined_to_its_prefix_and_its_client_id(
    mosquitto_factory: Callable[..., MosquittoService], unique_id: str, tmp_path: Path, wait_for: Any,
) -> None:
    site, other = unique_id, f"x{unique_id}"[:63]
    secured = start_secured_broker(mosquitto_factory, tmp_path / "users", "cds-backend",
                                   [(site, "gw1"), (site, "gw2"), (other, "gw1")])
    broker, user = secured.broker, f"{site}/gw1"
    own = f"cds/v1/{site}/gw1"
    gw = Probe(broker, user, secured.password(user), gateway_client_id(site, "gw1"))
    try:
        assert not gw.refused
        assert gw.subscribe(f"{own}/down/#", f"{own}/down/config/+") == [0x01, 0x01]
        refused = [f"cds/v1/{site}/gw2/down/#", f"cds/v1/{other}/gw1/down/#", mqtt.READINGS_FILTER, "cds/v1/#", "#",
                   f"$share/cds-backend/{mqtt.READINGS_FILTER}", f"$share/x/{own}/down/#", mqtt.STATUS_FILTER,
                   "cds/v1/_backend/#", "cds/v1/_deadletter/#", "$SYS/#", "$CONTROL/dynamic-security/#"]
        assert gw.subscribe(*refused) == [NOT_AUTHORIZED] * len(refused)
        allowed = [gw.publish(f"{own}/{leaf}", b"{}") for leaf in
                   ("status", f"devices/{device_id(1)}", "up/readings", "up/config-result")]
        denied = [gw.publish(topic, b"{}") for topic in (
            mqtt.readings_topic(site, "gw2"), mqtt.status_topic(site, "gw2"),
            mqtt.device_topic(site, "gw2", device_id(2)), mqtt.readings_topic(other, "gw1"),
            mqtt.config_topic(site, "gw1", device_id(1)),
            f"{mqtt.DEAD_LETTER_ROOT}/x", f"cds/v1/{site}/alerts", "cds/v1/_backend/cds-backend/be-1",
            "$CONTROL/dynamic-security/v1", f"{own}/up/other", "elsewhere")]
        wait_for(lambda: all(gw.puback(m) is not None for m in allowed + denied), what="every PUBACK")
        assert all(gw.puback(m) in ACCEPTED for m in allowed), [gw.puback(m) for m in allowed]
        assert [gw.puback(m) for m in denied] == [NOT_AUTHORIZED] * len(denied)
    finally:
        gw.close()
    for username, password, client_id in [
        (user, secured.password(user), "any-other-id"),              # its own password, another client id
        (user, secured.password(f"{site}/gw2"), gateway_client_id(site, "gw1")),  # a neighbour's password
        ("nobody", "x", "nobody"), (user, "", gateway_client_id(site, "gw1")),
    ]:
        probe = Probe(broker, username, password, client_id)
        probe.close()
        assert probe.refused, (username, client_id)


@pytest.mark.asyncio
async def test_backend_end_to_end_with_generated_users_config_reaches_only_its_gateway(
    mosquitto_factory: Callable[..., MosquittoService], influx: InfluxService, unique_id: str, tmp_path: Path,
    publisher_factory: Any, wait_for_async: Any,
) -> None:
    site, group = unique_id, f"g-{unique_id}"
    secured = start_secured_broker(mosquitto_factory, tmp_path / "users", group, [(site, "gw1"), (site, "gw2")])
    broker = secured.broker
    settings = make_settings(broker, influx, unique_id, mqtt_username=BACKEND_USER,
                             mqtt_password=secured.password(BACKEND_USER))
    app = create_app(settings)
    ops = Probe(broker, OPS_USER, secured.password(OPS_USER), f"ops-{unique_id}")
    assert ops.subscribe("cds/v1/_deadletter/#", f"cds/v1/_backend/{group}/+") == [0x01, 0x01]
    async with AsyncTestClient(app) as client:
        assert await app.state.services.ingest.bridge.wait_connected(10)
        now = int(time.time() * 1000)
        pubs = {}
        for gw, dev in (("gw1", device_id(1)), ("gw2", device_id(2))):
            pub = pubs[gw] = publisher_factory(broker, client_id=gateway_client_id(site, gw),
                                               username=f"{site}/{gw}", password=secured.password(f"{site}/{gw}"))
            pub.publish(mqtt.status_topic(site, gw), mqtt.json_encoder.encode(
                GatewayStatus(online=True, gateway=gw, site=site, ts=now)), retain=True)
            pub.publish(mqtt.device_topic(site, gw, dev), mqtt.json_encoder.encode(
                DeviceInfo(device=dev, firmware="1.0.0", hw_rev=1, boot=1, report_period_ms=1000, seen_at=now)),
                retain=True)
            for seq in range(1, 51):
                pub.publish(mqtt.readings_topic(site, gw),
                            batch_bytes(site, gw, [reading(dev, seq, now - 100_000 + seq * 1000)]))
        pubs["gw2"].publish(mqtt.readings_topic(site, "gw2"), b"not json")
        for pub in pubs.values():
            pub.wait_all_acked()
            assert pub.refused == []
            pub.close()  # the probes below take over these client ids: the gateways' own, the only ones allowed
        await wait_for_async(lambda: count_points(influx, unique_id) >= 100, timeout=30, what="100 readings stored")
        dead = f"{mqtt.DEAD_LETTER_ROOT}/{mqtt.readings_topic(site, 'gw2')}"
        await wait_for_async(lambda: dead in ops.topics(), timeout=10, what="the dead letter, seen by ops")
        presence = f"cds/v1/_backend/{group}/{settings.resolved_client_id()}"
        assert presence in ops.topics()

        def answer(probe: Probe, msg: paho.MQTTMessage) -> None:
            req = mqtt.config_request_decoder.decode(msg.payload)
            probe.publish(mqtt.config_result_topic(site, "gw1"), mqtt.json_encoder.encode(ConfigResult(
                device=msg.topic.rsplit("/", 1)[1], request_id=req.request_id, status="applied",
                report_period_ms=req.report_period_ms or 0)))

        gw1 = Probe(broker, f"{site}/gw1", secured.password(f"{site}/gw1"), gateway_client_id(site, "gw1"),
                    on_message=answer)
        gw2 = Probe(broker, f"{site}/gw2", secured.password(f"{site}/gw2"), gateway_client_id(site, "gw2"))
        try:
            assert gw1.subscribe(f"cds/v1/{site}/gw1/down/config/+") == [0x01]
            assert gw2.subscribe(f"cds/v1/{site}/gw2/down/#", f"cds/v1/{site}/gw1/down/#") == [0x01, NOT_AUTHORIZED]
            await wait_for_async(lambda: app.state.services.devices.book.owner(device_id(1)), timeout=10,
                                 what="gw1's meter known")
            applied = await client.put("/api/v1/aicss/config", headers=token(client, "operator"),
                                       json={"device": device_id(1), "report_period_ms": 2000, "timeout_s": 10})
            assert applied.status_code == 200, applied.text
            assert applied.json()["status"] == "applied"
            assert gw1.topics() == [mqtt.config_topic(site, "gw1", device_id(1))]
            assert gw2.topics() == []
        finally:
            gw1.close()
            gw2.close()
    ops.close()


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    return subprocess.run([sys.executable, "-m", "backend", "broker-users", *args], cwd=REPO, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_cli_writes_private_files_and_adds_rotates_removes_a_gateway_on_a_running_broker(
    mosquitto_factory: Callable[..., MosquittoService], unique_id: str, tmp_path: Path, wait_for: Any,
) -> None:
    site, folder = unique_id, tmp_path / "users"
    env = {"BACKEND_MQTT_USERNAME": BACKEND_USER, "BACKEND_MQTT_SHARE_GROUP": "cds-backend"}
    list_path = write_gateway_list(folder, [(site, "gw1")])
    dynsec = folder / "dynamic-security.json"
    first = _cli("--gateways", str(list_path), "--out", str(dynsec), env=env)
    assert first.returncode == 0, first.stderr
    passwords = folder / "passwords"
    secrets_ = {p.name: p.read_text() for p in passwords.iterdir()}
    assert set(secrets_) == {BACKEND_USER, OPS_USER, ADMIN_USER, f"{site}.gw1"}
    assert not any(s.strip() in first.stdout + first.stderr for s in secrets_.values())  # never printed
    for path in [dynsec, *passwords.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    again = _cli("--gateways", str(list_path), "--out", str(dynsec), env=env)
    assert again.returncode == 0 and {p.name: p.read_text() for p in passwords.iterdir()} == secrets_

    broker = mosquitto_factory(dynamic_security_file=dynsec, allow_anonymous=False)
    # mosquitto_ctrl 2.0.11 ignores -o (it loads its options file before parsing the command line), so its
    # connection options go where it always looks: $XDG_CONFIG_HOME/mosquitto_ctrl
    ctrl_home = tmp_path / "ctrl"
    ctrl_home.mkdir(mode=0o700)
    (ctrl_home / "mosquitto_ctrl").write_text(
        f"-h {broker.host}\n-p {broker.port}\n-u {ADMIN_USER}\n-P {secrets_[ADMIN_USER].strip()}\n")
    ctrl = f"XDG_CONFIG_HOME={shlex.quote(str(ctrl_home))} mosquitto_ctrl"

    def run_ctrl(script: str) -> None:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr

    # add gw2: first to the list, then live with the printed commands
    write_gateway_list(folder, [(site, "gw1"), (site, "gw2")])
    add = _cli("--gateways", str(list_path), "--commands", f"{site}/gw2", "--ctrl", ctrl, "--show-passwords",
               env=env)
    assert add.returncode == 0, add.stderr
    gw2_password = (passwords / f"{site}.gw2").read_text().strip()
    assert gw2_password in add.stderr and gw2_password not in add.stdout  # shown as asked, never into the shell
    run_ctrl(add.stdout)
    gw2 = Probe(broker, f"{site}/gw2", gw2_password, gateway_client_id(site, "gw2"))
    try:
        assert not gw2.refused
        assert gw2.subscribe(f"cds/v1/{site}/gw2/down/#", f"$share/cds-backend/{mqtt.READINGS_FILTER}") == [
            0x01, NOT_AUTHORIZED]
        mids = [gw2.publish(mqtt.readings_topic(site, "gw2"), b"{}"), gw2.publish(mqtt.readings_topic(site, "gw1"),
                                                                                  b"{}")]
        wait_for(lambda: all(gw2.puback(m) is not None for m in mids), what="two PUBACKs")
        assert gw2.puback(mids[0]) in ACCEPTED and gw2.puback(mids[1]) == NOT_AUTHORIZED
    finally:
        gw2.close()
    # rotate its password (the broker disconnects it; the old password stops working)
    run_ctrl(f"{ctrl} dynsec setClientPassword {shlex.quote(site + '/gw2')} new-secret-{unique_id}")
    old, new = (Probe(broker, f"{site}/gw2", pw, gateway_client_id(site, "gw2"))
                for pw in (gw2_password, f"new-secret-{unique_id}"))
    old.close()
    new.close()
    assert old.refused and not new.refused
    # remove it
    run_ctrl(f"{ctrl} dynsec deleteClient {shlex.quote(site + '/gw2')}\n"
             f"{ctrl} dynsec deleteRole {shlex.quote('gateway/' + site + '/gw2')}")
    gone = Probe(broker, f"{site}/gw2", f"new-secret-{unique_id}", gateway_client_id(site, "gw2"))
    gone.close()
    assert gone.refused
    # gw1, generated by the first run, was never touched
    gw1 = Probe(broker, f"{site}/gw1", secrets_[f"{site}.gw1"].strip(), gateway_client_id(site, "gw1"))
    gw1.close()
    assert not gw1.refused

