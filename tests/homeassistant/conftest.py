"""A secured broker with Home Assistant users (made by ``python -m backend broker-users``), MQTT clients that play
Home Assistant and a gateway, and the bridge itself in-process.

Every test gets its own broker (``mosquitto_factory``), so the retained configs, states and statuses it leaves
die with that broker and no other test sees them; its sites are unique ids besides.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backend.homeassistant.bridge import HomeAssistantBridge
from backend.ingest.broker_provisioning import broker_users
from backend.settings import Settings
from devstack.mosquitto import MosquittoService
from protocol import homeassistant as ha
from protocol import mqtt
from tests.backend.secured_broker import Probe

BACKEND_USER = "backend"


@dataclass
class HaBroker:
    broker: MosquittoService
    site: str
    other_site: str
    passwords_dir: Path

    def password(self, username: str) -> str:
        return (self.passwords_dir / username.replace("/", ".")).read_text(encoding="utf-8").strip()

    def settings(self, **overrides: Any) -> Settings:
        base: dict[str, Any] = dict(mqtt_host=self.broker.host, mqtt_port=self.broker.port,
                                    homeassistant_state_interval_s=0.05, log_level="WARNING")
        base.update(overrides)
        return Settings(**base)


def write_list(folder: Path, site: str, other_site: str) -> Path:
    """Two sites with a gateway each, both with Home Assistant on."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gateways.toml"
    path.write_text(f'passwords_dir = "passwords"\nhomeassistant_sites = ["{site}", "{other_site}"]\n\n'
                    f'[[gateways]]\nsite = "{site}"\ngateway = "gw1"\n\n'
                    f'[[gateways]]\nsite = "{other_site}"\ngateway = "gw1"\n', encoding="utf-8")
    return path


@pytest.fixture
def ha_broker(mosquitto_factory: Callable[..., MosquittoService], unique_id: str, tmp_path: Path) -> HaBroker:
    site, other = unique_id, f"o-{unique_id}"[:63]
    list_path = write_list(tmp_path / "users", site, other)
    dynsec = tmp_path / "users" / "dynamic-security.json"
    broker_users(list_path, settings=Settings(mqtt_username=BACKEND_USER, mqtt_share_group="cds-backend"), out=dynsec)
    broker = mosquitto_factory(dynamic_security_file=dynsec, allow_anonymous=False)
    return HaBroker(broker, site, other, tmp_path / "users" / "passwords")


@pytest.fixture
def clients() -> Iterator[Callable[..., Probe]]:
    made: list[Probe] = []

    def make(*args: Any, **kwargs: Any) -> Probe:
        c = Probe(*args, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def home_assistant(make: Callable[..., Probe], hb: HaBroker, site: str | None = None) -> Probe:
    """Home Assistant's MQTT client for ``site``, subscribed as it subscribes with discovery prefix
    ``homeassistant/<site>``."""
    site = site or hb.site
    c = make(hb.broker, ha.ha_username(site), hb.password(ha.ha_username(site)), ha.ha_client_id(site))
    prefix = ha.discovery_prefix(ha.DEFAULT_DISCOVERY_ROOT, site)
    assert c.subscribe(f"{prefix}/+/+/config", f"{prefix}/+/+/+/config") == [1, 1]
    return c


def gateway(make: Callable[..., Probe], hb: HaBroker, gw: str = "gw1") -> Probe:
    """A gateway of ``hb.site`` with its real user, client id and last will."""
    will = mqtt.json_encoder.encode(mqtt.GatewayStatus(online=False, gateway=gw, site=hb.site))
    user = f"{hb.site}/{gw}"
    c = make(hb.broker, user, hb.password(user), f"cds-gw-{hb.site}-{gw}",
             will=(mqtt.status_topic(hb.site, gw), will))
    assert not c.refused
    return c


@pytest.fixture
def bridges() -> Iterator[Callable[..., HomeAssistantBridge]]:
    made: list[HomeAssistantBridge] = []

    def make(hb: HaBroker, **overrides: Any) -> HomeAssistantBridge:
        b = HomeAssistantBridge(hb.settings(**overrides), hb.site, hb.password(ha.bridge_username(hb.site)))
        made.append(b)
        b.start()
        assert b.connected.wait(10), "the bridge did not connect"
        return b

    yield make
    for b in made:
        b.stop()


def now_ms() -> int:
    return int(time.time() * 1000)
