"""backend/ingest/broker_users.py without a broker: the hashes the plugin verifies, the list's rules, the roles.
What these roles do on a real broker: tests/backend/test_broker_security.py."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from backend.errors import ConfigError
from backend.ingest.broker_users import (
    GatewayUser,
    UserList,
    add_gateway_commands,
    build_config,
    encode_config,
    hash_password,
    load_user_list,
)
from gateway.settings import Settings as GatewaySettings

PASSWORDS = {"backend": "b", "ops": "o", "cds-admin": "a", "casa-1/gw-1": "g1", "casa-2/gw-1": "g2"}


def test_password_hash_is_the_one_mosquitto_ctrl_writes(tmp_path: Path) -> None:
    path = tmp_path / "init.json"
    subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(path), "admin", "s3cret-Senha"], check=True,
                   capture_output=True)
    (admin,) = json.loads(path.read_text())["clients"]
    assert admin["iterations"] == 101
    assert hash_password("s3cret-Senha", base64.b64decode(admin["salt"])) == (admin["password"], admin["salt"])
    with pytest.raises(ValueError, match="12-byte salt"):
        hash_password("x", b"short")


def test_generated_file_roles_and_default_deny() -> None:
    users = UserList(gateways=[GatewayUser("casa-1", "gw-1"), GatewayUser("casa-2", "gw-1", client_id="custom")])
    config = json.loads(encode_config(build_config(users, "backend", "grupo-a", PASSWORDS)))
    assert config["defaultACLAccess"] == {"publishClientSend": False, "publishClientReceive": False,
                                          "subscribe": False, "unsubscribe": True}
    roles = {r["rolename"]: r["acls"] for r in config["roles"]}
    assert all(acl["allow"] is True for acls in roles.values() for acl in acls)  # missing "allow" means deny
    subscribe = {name: {a["topic"] for a in acls if a["acltype"].startswith("subscribe")}
                 for name, acls in roles.items()}
    assert subscribe["backend"] == {"$share/grupo-a/cds/v1/+/+/up/readings", "cds/v1/+/+/status",
                                    "cds/v1/+/+/devices/+", "cds/v1/+/+/up/config-result", "cds/v1/_backend/grupo-a/+"}
    assert subscribe["gateway/casa-1/gw-1"] == {"cds/v1/casa-1/gw-1/down/#"}
    assert subscribe["ops"] == {"cds/v1/#", "$SYS/#"}
    assert subscribe["dynsec-admin"] == {"$CONTROL/dynamic-security/#"}
    assert not any(t.startswith("$share") for name, topics in subscribe.items() if name != "backend" for t in topics)
    send = {a["topic"] for a in roles["gateway/casa-2/gw-1"] if a["acltype"] == "publishClientSend"}
    assert send == {f"cds/v1/casa-2/gw-1/{leaf}" for leaf in ("status", "devices/+", "up/readings",
                                                              "up/config-result")}
    clients = {c["username"]: c for c in config["clients"]}
    assert clients["casa-1/gw-1"]["clientid"] == "cds-gw-casa-1-gw-1"
    assert clients["casa-2/gw-1"]["clientid"] == "custom"
    assert "clientid" not in clients["backend"]  # replicas adopt each other's sessions by client id
    assert {c["username"]: [r["rolename"] for r in c["roles"]] for c in config["clients"]} == {
        "backend": ["backend"], "ops": ["ops"], "cds-admin": ["dynsec-admin"],
        "casa-1/gw-1": ["gateway/casa-1/gw-1"], "casa-2/gw-1": ["gateway/casa-2/gw-1"]}


def test_gateway_default_client_id_is_the_gateways_own() -> None:
    gw = GatewaySettings(site="casa-1", gateway="gw-sala")
    assert GatewayUser("casa-1", "gw-sala").resolved_client_id == gw.client_id


@pytest.mark.parametrize(("text", "error"), [
    ('[[gateways]]\nsite = "Casa"\ngateway = "gw"\n', "site"),
    ('[[gateways]]\nsite = "a/b"\ngateway = "gw"\n', "site"),
    ('[[gateways]]\nsite = "a"\ngateway = "gw"\npassword = "x"\n', "password"),
    ('[[gateways]]\nsite = "a"\ngateway = "gw"\n[[gateways]]\nsite = "a"\ngateway = "gw"\n', "twice"),
    ('[[gateways]]\nsite = "a-b"\ngateway = "c"\n[[gateways]]\nsite = "a"\ngateway = "b-c"\n', "cds-gw-a-b-c"),
    ('[[gateways]]\nsite = "a"\ngateway = "b"\nclient_id = "a b"\n', "client id"),
    ('ops_username = "o.ps"\n', "ops_username"),
    ("gateways = 3\n", "gateways"),
], ids=["upper-case", "slash", "unknown-field", "duplicate", "client-id-collision", "bad-client-id",
        "dotted-ops", "not-a-list"])
def test_bad_gateway_lists_refused_with_reason(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_user_list(text)


def test_backend_identity_checked() -> None:
    users = UserList()
    with pytest.raises(ConfigError, match="BACKEND_MQTT_USERNAME"):
        build_config(users, "", "g", {"": "x", "ops": "o", "cds-admin": "a"})
    with pytest.raises(ConfigError, match="distinct"):
        build_config(UserList(ops_username="backend"), "backend", "g", PASSWORDS)
    with pytest.raises(KeyError):
        build_config(UserList(gateways=[GatewayUser("s", "g")]), "backend", "g", PASSWORDS)


def test_add_gateway_commands_create_the_role_before_the_client_and_never_hold_the_password() -> None:
    gw = GatewayUser("casa-1", "gw-1")
    lines = add_gateway_commands(gw, "/srv/it's here/casa-1.gw-1", "mosquitto_ctrl")
    assert lines[0] == "mosquitto_ctrl dynsec createRole gateway/casa-1/gw-1"
    assert len([line for line in lines if "addRoleACL" in line]) == 6
    assert lines[-2] == ("mosquitto_ctrl dynsec createClient casa-1/gw-1 -c cds-gw-casa-1-gw-1 "
                         "-p \"$(cat '/srv/it'\"'\"'s here/casa-1.gw-1')\"")
    assert lines[-1] == "mosquitto_ctrl dynsec addClientRole casa-1/gw-1 gateway/casa-1/gw-1"
    shell = subprocess.run(["bash", "-c", f"cat() {{ echo \"$1\"; }}; printf '%s\\n' {lines[-2].split(' -p ')[1]}"],
                           capture_output=True, text=True, check=True)
    assert shell.stdout == "/srv/it's here/casa-1.gw-1\n"  # the shell reads the file named, quoting intact


def test_shipped_example_lists_load() -> None:
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    example = load_user_list((deploy / "mosquitto" / "gateways.toml.example").read_bytes())
    assert [g.username for g in example.gateways] == ["casa-1/gw-sala", "casa-1/gw-cozinha"]
    assert (example.ops_username, example.admin_username) == ("ops", "cds-admin")
    compose = load_user_list((deploy / "compose" / "gateways.toml").read_bytes())
    assert compose.passwords_dir == "secrets/mqtt" and [g.username for g in compose.gateways] == ["casa-1/gw-1"]
