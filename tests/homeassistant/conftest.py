"""A secured broker with Home Assistant users (made by ``python -m backend broker-users``), MQTT clients that play
Home Assistant and a gateway, and the bridge itself in-process.

Every test gets its own broker (``mosquitto_factory``), so the retained configs, states and statuses it leaves
die with that broker and no other test sees them; its sites are unique ids besides.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from backend.homeassistant.bridge import HomeAssistantBridge
from backend.ingest.broker_provisioning import broker_users
from backend.settings import Settings
from devstack.mosquitto import MosquittoService
from protocol import homeassistant as ha
from protocol import mqtt

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


class Client:
    """An MQTT 5 client that records what it receives and the broker's SUBACK and PUBACK codes."""

    def __init__(self, broker: MosquittoService, username: str, password: str, client_id: str, *,
                 will: tuple[str, bytes] | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retain)
        self.subacks: list[int] = []
        self.pubacks: dict[int, int] = {}
        self.connack: Any = None
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._suback = threading.Event()
        self._c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self._c.username_pw_set(username, password)
        if will is not None:
            self._c.will_set(will[0], will[1], qos=1, retain=True)
        self._c.on_connect = self._on_connect
        self._c.on_subscribe = self._on_subscribe
        self._c.on_publish = self._on_publish
        self._c.on_message = self._on_message
        self._c.connect(broker.host, broker.port)
        self._c.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError(f"no CONNACK for {username}")

    def _on_connect(self, c: paho.Client, u: Any, f: Any, reason: Any, p: Any) -> None:
        self.connack = reason
        if reason.is_failure:
            c.disconnect()
        self._connected.set()

    def _on_subscribe(self, c: paho.Client, u: Any, mid: int, reasons: Any, p: Any) -> None:
        with self._lock:
            self.subacks = [r.value for r in reasons]
        self._suback.set()

    def _on_publish(self, c: paho.Client, u: Any, mid: int, reason: Any, p: Any) -> None:
        with self._lock:
            self.pubacks[mid] = reason.value

    def _on_message(self, c: paho.Client, u: Any, m: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((m.topic, bytes(m.payload), bool(m.retain)))

    @property
    def refused(self) -> bool:
        return self.connack is None or self.connack.is_failure

    def subscribe(self, *filters: str) -> list[int]:
        self._suback.clear()
        self._c.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        if not self._suback.wait(10):
            raise TimeoutError(f"no SUBACK for {filters}")
        with self._lock:
            return list(self.subacks)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        return self._c.publish(topic, payload, qos=1, retain=retain).mid

    def puback(self, mid: int) -> int | None:
        with self._lock:
            return self.pubacks.get(mid)

    def received(self, topic: str | None = None) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return [m for m in self.messages if topic is None or m[0] == topic]

    def last(self, topic: str) -> bytes | None:
        got = self.received(topic)
        return got[-1][1] if got else None

    def drop_connection(self) -> None:
        """Vanish without a DISCONNECT, as a gateway that lost power does: the broker publishes the will."""
        self._c.loop_stop()
        sock = self._c.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(*args: Any, **kwargs: Any) -> Client:
        c = Client(*args, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def home_assistant(make: Callable[..., Client], hb: HaBroker, site: str | None = None) -> Client:
    """Home Assistant's MQTT client for ``site``, subscribed as it subscribes with discovery prefix
    ``homeassistant/<site>``."""
    site = site or hb.site
    c = make(hb.broker, ha.ha_username(site), hb.password(ha.ha_username(site)), ha.ha_client_id(site))
    prefix = ha.discovery_prefix(ha.DEFAULT_DISCOVERY_ROOT, site)
    assert c.subscribe(f"{prefix}/+/+/config", f"{prefix}/+/+/+/config") == [1, 1]
    return c


def gateway(make: Callable[..., Client], hb: HaBroker, gw: str = "gw1") -> Client:
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
