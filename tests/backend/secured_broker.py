"""A real Mosquitto with the shipped security (the dynamic-security plugin, deploy/mosquitto/conf.d/security.conf)
and users made by the operator's own command (``python -m backend broker-users``), plus an MQTT 5 probe that
records what the broker answers (CONNACK, SUBACK and PUBACK codes, delivered messages).

Every broker security test goes through :func:`start_secured_broker`, so what they prove holds for the file an
operator generates, not for a hand-written one.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from backend.ingest.broker_provisioning import broker_users
from backend.settings import Settings
from devstack.mosquitto import MosquittoService

BACKEND_USER = "backend"
OPS_USER = "ops"
ADMIN_USER = "cds-admin"


def gateway_client_id(site: str, gateway: str) -> str:
    """The client id a gateway's user is bound to (the gateway's own default)."""
    return f"cds-gw-{site}-{gateway}"


def write_gateway_list(folder: Path, gateways: Iterable[tuple[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ['passwords_dir = "passwords"', f'ops_username = "{OPS_USER}"', f'admin_username = "{ADMIN_USER}"']
    for site, gateway in gateways:
        lines += ["", "[[gateways]]", f'site = "{site}"', f'gateway = "{gateway}"']
    path = folder / "gateways.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class SecuredBroker:
    broker: MosquittoService
    list_path: Path
    dynsec_file: Path

    def password(self, username: str) -> str:
        name = username.replace("/", ".")  # gateway <site>/<gateway> -> file <site>.<gateway>
        return (self.list_path.parent / "passwords" / name).read_text(encoding="utf-8").strip()


def start_secured_broker(
    mosquitto_factory: Callable[..., MosquittoService],
    folder: Path,
    share_group: str,
    gateways: Iterable[tuple[str, str]],
    **broker_kwargs: Any,
) -> SecuredBroker:
    """Generate the users (backend of ``share_group``, ops, admin, ``gateways``) and start a broker with them."""
    list_path = write_gateway_list(folder, gateways)
    dynsec = folder / "dynamic-security.json"
    broker_users(list_path, settings=Settings(mqtt_username=BACKEND_USER, mqtt_share_group=share_group), out=dynsec)
    broker = mosquitto_factory(dynamic_security_file=dynsec, allow_anonymous=False, **broker_kwargs)
    return SecuredBroker(broker, list_path, dynsec)


class Probe:
    """An MQTT 5 client that records the broker's answers (CONNACK, SUBACK and PUBACK codes) and every message it
    is delivered. ``session_expiry`` > 0 keeps a persistent session (``clean_start=False``), which is what an
    attacker needs to stay in a share group while offline; ``will`` (topic, payload) is published retained by the
    broker when the connection drops without a DISCONNECT (:meth:`drop_connection`)."""

    def __init__(self, broker: MosquittoService, username: str, password: str, client_id: str, *,
                 session_expiry: int = 0, on_message: Callable[[Probe, paho.MQTTMessage], None] | None = None,
                 will: tuple[str, bytes] | None = None) -> None:  # fmt: skip
        self.connack: Any = None
        self._handler = on_message
        self.subacks: list[int] = []
        self.pubacks: dict[int, int] = {}
        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retain)
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
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if session_expiry:
            props.SessionExpiryInterval = session_expiry
        self._c.connect(broker.host, broker.port, clean_start=session_expiry == 0, properties=props)
        self._c.loop_start()
        if not self._connected.wait(10):
            self.close()
            raise TimeoutError(f"no CONNACK for {username!r}")

    def _on_connect(self, c: paho.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        if reason.is_failure:
            c.disconnect()  # no automatic retries with bad credentials
        self._connected.set()

    def _on_subscribe(self, c: paho.Client, u: Any, mid: int, reasons: Any, props: Any) -> None:
        with self._lock:
            self.subacks = [r.value for r in reasons]
        self._suback.set()

    def _on_publish(self, c: paho.Client, u: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            self.pubacks[mid] = reason.value

    def _on_message(self, c: paho.Client, u: Any, m: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((m.topic, bytes(m.payload), bool(m.retain)))
        if self._handler is not None:
            self._handler(self, m)  # e.g. a fake gateway answering a CONFIG request

    @property
    def refused(self) -> bool:
        return self.connack is None or self.connack.is_failure

    def subscribe(self, *filters: str) -> list[int]:
        """SUBSCRIBE (QoS 1) and return the SUBACK reason codes, one per filter (0x01 granted, 0x87 refused)."""
        self._suback.clear()
        self._c.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        if not self._suback.wait(10):
            raise TimeoutError(f"no SUBACK for {filters}")
        with self._lock:
            return list(self.subacks)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """QoS 1 publish; the PUBACK reason code arrives in ``pubacks[mid]``."""
        return self._c.publish(topic, payload, qos=1, retain=retain).mid

    def puback(self, mid: int) -> int | None:
        with self._lock:
            return self.pubacks.get(mid)

    def topics(self) -> list[str]:
        """The topics of the messages delivered so far, in order."""
        with self._lock:
            return [t for t, _, _ in self.messages]

    def received(self, topic: str | None = None) -> list[tuple[str, bytes, bool]]:
        """The messages delivered so far (on ``topic`` only, when given): (topic, payload, retain)."""
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
        """Disconnect; a persistent session stays on the broker (and in any share group it joined)."""
        self._c.disconnect()
        self._c.loop_stop()
