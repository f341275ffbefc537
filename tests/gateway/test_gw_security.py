"""The gateway against a broker with TLS, passwords and an ACL confining it to its own topic prefix."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gwharness import Collector, GatewayProcess

from devstack.mosquitto import MosquittoService
from devstack.processes import free_port
from protocol import mqtt
from sim.runner import MeterRunner
from tests.backend.secured_broker import BACKEND_USER, OPS_USER, Probe, start_secured_broker


def make_ca_and_server_cert(d: Path) -> tuple[Path, Path, Path]:
    ca_key, ca, key, csr, crt = (d / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=cds-test-ca",
        "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key),
        "-out", str(csr))  # fmt: skip
    ext = d / "san.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(ext), "-out", str(crt))  # fmt: skip
    return ca, crt, key


def test_gateway_over_tls_with_password_and_acl(
    sim: MeterRunner, tmp_path: Path, unique_id: str, wait_for: Callable[..., Any],
    mosquitto_factory: Callable[..., MosquittoService],
) -> None:  # fmt: skip
    ca, crt, key = make_ca_and_server_cert(tmp_path)
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "gw", "s3cret"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "reader", "r3ad"], check=True)
    acl = tmp_path / "acl"
    acl.write_text(f"user gw\ntopic readwrite cds/v1/{unique_id}/gw-1/#\n\nuser reader\ntopic read cds/v1/#\n")
    tls_port = free_port()
    broker = mosquitto_factory(
        password_file=passwords, acl_file=acl, allow_anonymous=False,
        config_extra=f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {crt}\nkeyfile {key}\n",
    )  # fmt: skip
    (tmp_path / "mqtt.pw").write_text("s3cret\n")
    meter = sim.add_meter(report_period_ms=20, queue_capacity=256)
    collector = Collector(broker, unique_id, "reader", "r3ad")
    gw = GatewayProcess(
        tmp_path / "gw", broker, unique_id, [str(sim.link_dir / "*")],
        mqtt={"port": tls_port, "tls": True, "ca_file": str(ca), "username": "gw",
              "password_file": str(tmp_path / "mqtt.pw")},
    )  # fmt: skip
    (tmp_path / "gw").mkdir()
    try:
        gw.start()
        wait_for(lambda: collector.count() >= 30, 15, what=lambda: f"readings over TLS\n{gw.log_tail()}")
        assert {device for device, _, _ in collector.keys(None)} == {meter.device}
        assert gw.status()["broker"]["state"] == "connected"
        gw.stop()

        (tmp_path / "mqtt.pw").write_text("wrong\n")
        gw.start()
        wait_for(lambda: gw.status()["errors"].get("mqtt_connect", 0) >= 1, 15, what="refused connection counted")
        assert gw.status()["broker"]["state"] != "connected"
    finally:
        gw.stop()
        collector.close()


def test_real_gateway_with_generated_broker_users_forwards_readings_and_applies_config(
    sim: MeterRunner, tmp_path: Path, unique_id: str, wait_for: Callable[..., Any],
    mosquitto_factory: Callable[..., MosquittoService],
) -> None:  # fmt: skip
    """The gateway as shipped (default client id, its last will, down/config/+ subscription) under the broker
    users that ``python -m backend broker-users`` generates, its password file used as is."""
    secured = start_secured_broker(mosquitto_factory, tmp_path / "users", "cds-backend", [(unique_id, "gw-1")])
    broker = secured.broker
    meter = sim.add_meter(report_period_ms=50, queue_capacity=256)
    collector = Collector(broker, unique_id, OPS_USER, secured.password(OPS_USER))
    gw = GatewayProcess(
        tmp_path / "gw", broker, unique_id, [str(sim.link_dir / "*")],
        mqtt={"username": f"{unique_id}/gw-1",
              "password_file": str(secured.list_path.parent / "passwords" / f"{unique_id}.gw-1")},
    )  # fmt: skip
    (tmp_path / "gw").mkdir()
    backend = Probe(broker, BACKEND_USER, secured.password(BACKEND_USER), f"be-{unique_id}")
    try:
        gw.start()
        wait_for(lambda: collector.count() >= 20, 15, what=lambda: f"readings\n{gw.log_tail()}")
        assert gw.status()["broker"]["state"] == "connected"
        backend.publish(mqtt.config_topic(unique_id, "gw-1", meter.device),
                        mqtt.json_encoder.encode(mqtt.ConfigRequest(request_id=3, report_period_ms=250)))
        wait_for(lambda: collector.topic_payloads("/up/config-result"), 15, what=lambda: f"result\n{gw.log_tail()}")
        (result,) = [mqtt.config_result_decoder.decode(p) for p in collector.topic_payloads("/up/config-result")]
        assert (result.request_id, result.status, meter.model.report_period_ms) == (3, "applied", 250)
    finally:
        backend.close()
        gw.stop()
        collector.close()
