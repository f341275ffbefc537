"""The Home Assistant users in the broker's file (backend/ingest/broker_users.py), without a broker: off by default,
one pair per listed site, checked lists. What the roles allow on a real broker: test_bridge.py."""

from __future__ import annotations

import pytest

from backend.errors import ConfigError
from backend.ingest.broker_users import UserList, build_config, load_user_list
from protocol import homeassistant as ha

PASSWORDS = {"backend": "b", "ops": "o", "cds-admin": "a", ha.bridge_username("casa-1"): "hb",
             ha.ha_username("casa-1"): "h"}


def test_no_home_assistant_user_unless_a_site_is_listed() -> None:
    config = build_config(UserList(), "backend", "cds-backend", PASSWORDS)
    assert not [r.rolename for r in config.roles if "homeassistant" in r.rolename]


def test_a_listed_site_gets_a_bridge_and_a_home_assistant_user_bound_to_their_client_ids() -> None:
    config = build_config(load_user_list('homeassistant_sites = ["casa-1"]\n'), "backend", "cds-backend", PASSWORDS)
    clients = {c.username: c for c in config.clients}
    assert clients[ha.bridge_username("casa-1")].clientid == "cds-habridge-casa-1"
    assert clients[ha.ha_username("casa-1")].clientid == "cds-ha-casa-1"
    roles = {r.rolename: r for r in config.roles}
    bridge_writes = {a.topic for a in roles["homeassistant-bridge/casa-1"].acls if a.acltype == "publishClientSend"}
    assert bridge_writes == {"homeassistant/casa-1/sensor/+/+/config", "cds-ha/v1/casa-1/#"}
    ha_writes = {a.topic for a in roles["homeassistant/casa-1"].acls if a.acltype == "publishClientSend"}
    assert ha_writes == {"homeassistant/casa-1/status"}


@pytest.mark.parametrize(("text", "error"), [
    pytest.param('homeassistant_sites = ["casa-1", "casa-1"]\n', "appears twice", id="site_twice"),
    pytest.param('homeassistant_sites = ["Casa 1"]\n', "gateway list", id="not_an_id"),
    pytest.param('homeassistant_sites = ["casa-1"]\n[[gateways]]\nsite = "x"\ngateway = "y"\n'
                 'client_id = "cds-ha-casa-1"\n', "appears twice", id="gateway_takes_home_assistants_client_id"),
])
def test_bad_home_assistant_sites_refused(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_user_list(text)


def test_discovery_root_with_a_wildcard_refused() -> None:
    with pytest.raises(ConfigError, match="discovery root"):
        build_config(load_user_list('homeassistant_sites = ["casa-1"]\n'), "backend", "cds-backend", PASSWORDS,
                     discovery_root="homeassistant/#")
