"""The backend's MQTT connection: paho-mqtt 2.x in its own thread, bridged to asyncio, with MANUAL acks.

Why paho and not aiomqtt: the reliability model (docs/architecture.md) acknowledges a message only after InfluxDB
accepted it. aiomqtt 2.5 acknowledges inside its receive loop and has no public manual-ack API; paho 2.x has
``Client(manual_ack=True)`` + ``client.ack(mid, qos)``. paho runs its network loop in a thread
(``loop_start``); every callback hops to the asyncio loop with ``call_soon_threadsafe``, so the rest of the
backend is single-threaded asyncio.

Session: MQTT 5, ``clean_start=False`` with a long session expiry and a STABLE client id per replica
(``BACKEND_MQTT_CLIENT_ID``), so the broker keeps queueing for us while we are away and redelivers the
messages that were in flight (received, not acked) when we come back. ``receive_maximum`` bounds how many
unacknowledged messages the broker sends us: that is the backpressure when InfluxDB is slow or down.

Ack safety across reconnects: a packet id is only meaningful on the connection that delivered it. Every
message carries the connection ``generation``; :meth:`MqttBridge.ack` drops acks of older generations (those
messages are redelivered by the broker on the new connection and acked then). The generation check and the
send happen under one lock that ``on_disconnect`` also takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from backend.errors import MqttUnavailableError
from backend.settings import Settings

log = logging.getLogger(__name__)



@dataclass(slots=True, frozen=True)
class Incoming:
    """One received PUBLISH, as the asyncio side sees it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    retain: bool
    generation: int
    bridge: MqttBridge | None = None
    """The connection that delivered it (acks go back through the same one)."""


class MqttBridge:
    """A paho client (manual ack, persistent session) whose events are delivered on an asyncio loop."""

    def __init__(
        self,
        settings: Settings,
        on_message: Callable[[Incoming], None],
        subscriptions: Sequence[tuple[str, int]],
        *,
        client_id: str | None = None,
        on_connect: Callable[[bool], None] | None = None,
        will: tuple[str, bytes] | None = None,
        birth: tuple[str, bytes] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id or settings.resolved_client_id()
        self._on_message_cb = on_message
        self._on_connect_cb = on_connect
        self._will = will
        self._birth = birth
        self._on_lost = on_lost
        self.lost = False
        self._subscriptions = list(subscriptions)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._generation = 0
        self._connected = False
        self._connected_event = asyncio.Event()
        self._publishes: dict[int, asyncio.Future[int]] = {}
        self._early_publishes: dict[int, int] = {}
        self._abandoned: set[int] = set()
        self.connects = 0
        self.last_error = ""
        self._client = self._make_client()

    # --- setup ----------------------------------------------------------------------------------------------

    def _make_client(self) -> paho.Client:
        s = self.settings
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=paho.MQTTv5, manual_ack=True)
        if s.mqtt_username:
            client.username_pw_set(s.mqtt_username, s.mqtt_password or None)
        if s.mqtt_tls:
            client.tls_set(ca_certs=s.mqtt_ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=5)
        if self._will is not None:
            client.will_set(self._will[0], self._will[1], qos=1, retain=True)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        return client

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self) -> None:
        """Connect in the background (paho retries until the broker answers) and start the network thread."""
        self._loop = asyncio.get_running_loop()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.mqtt_session_expiry_s
        props.ReceiveMaximum = self.settings.mqtt_receive_maximum
        self._client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port,
                                   keepalive=self.settings.mqtt_keepalive_s, clean_start=False, properties=props)
        self._client.loop_start()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._connected_event.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Disconnect (the session and its queue stay on the broker) and stop the network thread."""
        with self._lock:
            self._generation += 1
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._connected = False
        for fut in self._publishes.values():
            if not fut.done():
                fut.set_exception(MqttUnavailableError("MQTT bridge stopped"))
        self._publishes.clear()

    # --- paho thread callbacks ------------------------------------------------------------------------------

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed while shutting down
                loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.last_error = f"CONNACK {reason}"
            log.warning("mqtt connect refused", extra={"reason": str(reason), "client_id": self.client_id})
            return
        with self._lock:
            self._connected = True
        self.connects += 1
        if self._subscriptions:
            client.subscribe([(f, SubscribeOptions(qos=q)) for f, q in self._subscriptions])
        if self._birth is not None:
            client.publish(self._birth[0], self._birth[1], qos=1, retain=True)
        log.info("mqtt connected", extra={"client_id": self.client_id,
                                          "session_present": bool(flags.session_present)})
        self._call(self._connected_in_loop, bool(flags.session_present))

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        bad = [str(r) for r in reasons if r.is_failure]
        if bad:
            log.error("mqtt subscription refused", extra={"reasons": bad, "client_id": self.client_id})

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._lock:
            self._generation += 1
            self._connected = False
        if self._on_lost is not None and not self.lost:
            # A one-shot connection (session adoption): never reconnect by itself. Mosquitto 2.0.11 closes a
            # taken-over session with reason 0x80 rather than 0x8E, so any loss ends it; the owner decides.
            self.lost = True
            client.disconnect()  # stops paho's reconnect loop
            self._call(self._on_lost)
        self.last_error = f"disconnected: {reason}"
        log.warning("mqtt disconnected", extra={"reason": str(reason), "client_id": self.client_id})
        self._call(self._connected_event.clear)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._call(self._on_message_cb, Incoming(msg.topic, bytes(msg.payload), msg.mid, msg.qos,
                                                 bool(msg.retain), self._generation, self))

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._call(self._published, mid, getattr(reason, "value", 0))

    # --- loop-thread side -----------------------------------------------------------------------------------

    def _connected_in_loop(self, session_present: bool) -> None:
        self._connected_event.set()
        if self._on_connect_cb is not None:
            self._on_connect_cb(session_present)

    def _published(self, mid: int, code: int) -> None:
        fut = self._publishes.pop(mid, None)
        if mid in self._abandoned:
            self._abandoned.discard(mid)
        elif fut is None:
            self._early_publishes[mid] = code
        elif not fut.done():
            fut.set_result(code)

    def ack(self, msg: Incoming) -> bool:
        """PUBACK ``msg`` if it came on the current connection; False when it will be redelivered instead."""
        if msg.qos == 0:
            return True
        with self._lock:
            if msg.generation != self._generation or not self._connected:
                return False
            self._client.ack(msg.mid, msg.qos)
            return True

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                      timeout: float = 10.0) -> None:
        """Publish and wait for the broker's PUBACK (QoS 1); MqttUnavailableError on timeout or refusal."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS and info.rc != paho.MQTT_ERR_NO_CONN:
            raise MqttUnavailableError(f"publish to {topic!r} failed: {paho.error_string(info.rc)}")
        if qos == 0:
            return
        code = self._early_publishes.pop(info.mid, None)
        if code is None:
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._publishes[info.mid] = fut
            try:
                async with asyncio.timeout(timeout):
                    code = await fut
            except TimeoutError as exc:
                self._publishes.pop(info.mid, None)
                self._abandoned.add(info.mid)
                raise MqttUnavailableError(f"no PUBACK for {topic!r} within {timeout} s") from exc
        if code >= 0x80:
            raise MqttUnavailableError(f"broker refused publish to {topic!r} (reason code {code:#x})")
