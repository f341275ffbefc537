"""The MQTT forwarder: queued readings -> ReadingBatch messages at QoS 1 -> rows kept until the backend's receipt.

paho-mqtt 2.x, MQTT 5 with ``clean_start=False`` and a session expiry, so the broker keeps our session (and any
downlink CONFIG published while we were away). paho's network thread reconnects with backoff and resends the
QoS 1 messages still waiting for a PUBACK; a pump thread (gateway/pump.py) reads batches from the queue (oldest
first), keeps up to ``max_inflight`` messages in flight and takes a batch's rows out of the queue only when its
PUBACK (``on_publish``) arrives. A restarted gateway starts again from the first queued row: delivery is
at-least-once, and a reading is recognisable by ``(device, boot, seq)`` downstream.

End-to-end receipts (gateway/receipts.py): every batch carries a fresh id, and a PUBACKed batch's rows move to the
queue's sent rows tagged with it (gateway/sent.py); the backend names the id on ``.../down/receipts`` once the
readings are in InfluxDB or dead-lettered, and only then are the rows deleted. In receipts mode the pump also sends
again, under new ids, what stays unconfirmed (overtaken rows at once, otherwise a probe with backoff). A receipt
may overtake its batch's PUBACK (after a reconnect the broker can deliver a receipt queued for us before it
PUBACKs paho's resend of the batch): it is held until the PUBACK moves the rows.

Replay after a broker crash, while no receipt has been seen (an older backend): Mosquitto has no per-message log;
killed (or powered off) it restarts from its last autosave, and the QoS 1 messages it PUBACKed since then are gone.
With ``queue.replay_window_s`` > 0 the queue keeps PUBACKed rows for that long, and the pump re-publishes
them, oldest first, before the unsent rows, on every reconnect after a lost connection, on the first connection
after the gateway itself crashed (no clean-stop mark in the queue), and whenever the broker answers
``session_present = False`` (it lost or expired our session). It cannot wait for ``session_present = False``
alone: a session that was in the broker's last autosave comes back with it, so the broker answers ``True`` after
a crash too, and a crash and a network outage look the same from here. The cost is at most ``replay_window_s`` of
readings sent again per reconnect; they are identical and the backend stores each ``(device, boot, seq)`` once.
Receipts mode needs no replay: what the broker lost stays unconfirmed and is sent again. The downlink
subscriptions are renewed on every connect (a lost session lost them too).

A batch payload is assembled from the JSON stored per row, so draining costs a SELECT and a ``bytes.join``.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from queue import SimpleQueue
from typing import Literal, Protocol

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.pump import Pump
from gateway.queue import DurableQueue
from gateway.receipts import Receipts
from gateway.settings import Settings
from gateway.stats import Stats
from protocol import mqtt

log = logging.getLogger(__name__)

BrokerState = Literal["connecting", "connected", "disconnected", "stopped"]
VERSION = "0.1.0"


class Inbound(Protocol):
    """What the forwarder hands to the meter side (:class:`gateway.ingest.Ingest`, see :meth:`Forwarder.attach`)."""

    def submit_config(self, device: str, request: mqtt.ConfigRequest | None, error: str = "") -> None:
        """A downlink CONFIG arrived (``request`` None and ``error`` set when its payload did not decode)."""

    def device_infos(self) -> list[mqtt.DeviceInfo]:
        """Every meter seen, to republish their retained info after a (re)connection."""


class Forwarder(Pump):
    """Owns the paho client and the pump thread; :meth:`attach` the ingest before :meth:`start`."""

    def __init__(self, settings: Settings, queue: DurableQueue, stats: Stats) -> None:
        self.settings = settings
        self.queue = queue
        self.stats = stats
        self.state: BrokerState = "connecting"
        self.since = time.time()
        self.last_error = ""
        self.inflight_messages = 0
        self._inbound: Inbound | None = None
        self._site, self._gw = settings.site, settings.gateway
        self._topic = mqtt.readings_topic(self._site, self._gw)
        self._config_prefix = mqtt.config_topic(self._site, self._gw, "")
        self._receipts_topic = mqtt.receipts_topic(self._site, self._gw)
        self.receipts = Receipts(settings.queue.receipt_timeout_s, stats)
        if not self.receipts.enabled and queue.receipts:  # turned off by the operator: back to the replay window
            queue.set_receipts(False)
        self._acks: SimpleQueue[tuple[int, bool]] = SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._draining = threading.Event()
        """Set by :meth:`stop`: hand out no more batches, and end the pump once those in flight are PUBACKed."""
        self._connected = threading.Event()
        self._status_due = 0.0
        self._replay_reason = ""
        self._connects = 0
        self._replay_requests = 0
        """Incremented by a CONNACK that calls for a replay; the pump starts a replay pass when it changes."""
        self._replay_first = not queue.take_clean_stop()
        self._had_session = False
        self.client = self._make_client()
        self._pump_thread = threading.Thread(target=self._pump, name="forwarder", daemon=True)

    def attach(self, inbound: Inbound) -> None:
        """Connect the meter side. Separate from ``__init__`` because the ingest, built after the forwarder,
        publishes through it."""
        self._inbound = inbound

    @property
    def _meters(self) -> Inbound:
        if self._inbound is None:  # start() refuses to run unattached, and paho calls back only after start()
            raise RuntimeError("Forwarder.attach() was not called")
        return self._inbound

    # --- paho client -----------------------------------------------------------------------------------------------

    def _status_payload(self, online: bool) -> bytes:
        queued, oldest = 0, 0
        if online:
            queued = self.queue.rows
            ts = self.queue.oldest_ts() if queued else None
            oldest = max(0, int(time.time() * 1000) - ts) if ts is not None else 0
        return mqtt.json_encoder.encode(
            mqtt.GatewayStatus(
                online=online, gateway=self._gw, site=self._site, version=VERSION, queued=queued,
                oldest_queued_ms=oldest, ts=int(time.time() * 1000), receipts=self.queue.receipts,
                unconfirmed=self.queue.replay_rows if online else 0,
            )
        )  # fmt: skip

    def _make_client(self) -> paho.Client:
        m = self.settings.mqtt
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.settings.client_id, protocol=paho.MQTTv5)
        client.max_inflight_messages_set(m.max_inflight)
        # unbounded: the pump bounds what it hands over (max_inflight), and a publish refused for a full queue would
        # lose a device info or a config result, which are published once
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(m.reconnect_min_s, m.reconnect_max_s)  # type: ignore[arg-type]
        if m.username:
            client.username_pw_set(m.username, m.password or None)
        if m.tls:
            client.tls_set(
                ca_certs=m.ca_file or None,
                certfile=m.cert_file or None,
                keyfile=m.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(m.tls_insecure)
        will = mqtt.GatewayStatus(online=False, gateway=self._gw, site=self._site, version=VERSION)
        client.will_set(mqtt.status_topic(self._site, self._gw), mqtt.json_encoder.encode(will), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: paho.Client, _u: object, flags: paho.ConnectFlags, rc: ReasonCode, _p: Properties | None = None
    ) -> None:
        if rc.is_failure:
            self.stats.error("mqtt_connect")
            self.last_error = str(rc)
            log.warning("broker refused the connection: %s", rc)
            return
        self.state, self.since, self.last_error = "connected", time.time(), ""
        self.stats.inc("mqtt_connects")
        log.info("connected to %s:%d (session present: %s)", self.settings.mqtt.host, self.settings.mqtt.port,
                 flags.session_present)  # fmt: skip
        reason = ""
        if not flags.session_present and self._had_session:
            self.stats.inc("sessions_lost")
            reason = "the broker lost our session (crash, restore or expiry)"
            log.warning("%s: subscribing again", reason)
        elif self._connects:
            # replay on every reconnect, session present or not: a crashed broker restores our session from its last
            # autosave (session_present = True) without the messages it PUBACKed since, and from here a crash and a
            # network outage look the same
            reason = "reconnected after a lost connection (the broker may have crashed)"
        elif self._replay_first:
            reason = "first connection after the gateway did not stop cleanly"
        # with session_expiry_s = 0 the broker ends the session at every disconnect: its absence is then no loss
        self._had_session = self.settings.mqtt.session_expiry_s > 0
        topics = [self._config_prefix + "+"] + ([self._receipts_topic] if self.receipts.enabled else [])
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in topics])  # always: a lost session lost them too
        self._connects += 1
        if reason and self.queue.replay_window_s > 0 and not self.queue.receipts:
            self._replay_reason = reason
            self._replay_requests += 1
        self._status_due = 0.0
        # Connected before the DeviceInfos go out: publish_device drops what it is given while disconnected, and
        # a broker restored from an older save may have lost them (the meters will not say HELLO again).
        self._connected.set()
        for info in self._meters.device_infos():
            self.publish_device(info)
        self._wake.set()

    def _on_disconnect(
        self, _c: paho.Client, _u: object, _f: paho.DisconnectFlags, rc: ReasonCode, _p: Properties | None = None
    ) -> None:
        self._connected.clear()
        if self.state == "connected":
            self.stats.inc("mqtt_disconnects")
            log.warning("disconnected from the broker: %s", rc)
        if self.state != "stopped":
            self.state, self.since = "disconnected", time.time()
            self.last_error = str(rc)

    def _on_publish(self, _c: paho.Client, _u: object, mid: int, rc: ReasonCode, _p: Properties | None = None) -> None:
        self._acks.put((mid, rc.is_failure))
        self._wake.set()

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic == self._receipts_topic:
            self.receipts.deliver(bytes(msg.payload))
            self._wake.set()
            return
        device = msg.topic.rsplit("/", 1)[-1]
        if not msg.topic.startswith(self._config_prefix) or not device:
            return
        try:
            request = mqtt.config_request_decoder.decode(msg.payload)
        except msgspec.DecodeError as exc:
            self._meters.submit_config(device, None, str(exc))
            return
        self._meters.submit_config(device, request, "")

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._inbound is None:
            raise RuntimeError("Forwarder.attach() must be called before start()")
        m = self.settings.mqtt
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = m.session_expiry_s
        self.client.connect_async(m.host, m.port, keepalive=m.keepalive_s, clean_start=False, properties=props)
        self.client.loop_start()
        self._pump_thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Let the batches in flight get their PUBACKs (up to ``timeout``), publish ``online: false`` (retained),
        disconnect cleanly and stop the threads. Without the wait, a batch the broker had taken but not yet
        acknowledged stayed queued and went out again after a restart: a duplicate downstream on every upgrade."""
        self._draining.set()
        self._wake.set()
        self._pump_thread.join(timeout)
        self._stop.set()
        self._wake.set()
        self._pump_thread.join(timeout)
        # a clean DISCONNECT does not fire the will, so the retained status must say offline by this publish
        if self._connected.is_set():
            info = self.client.publish(
                mqtt.status_topic(self._site, self._gw), self._status_payload(False), qos=1, retain=True
            )
            deadline = time.monotonic() + timeout
            while not info.is_published() and time.monotonic() < deadline and self._connected.is_set():
                time.sleep(0.01)
        self.state = "stopped"
        self.client.disconnect()
        self.client.loop_stop()

    def wake(self) -> None:
        """New rows were committed."""
        self._wake.set()

    # --- publishing from other threads --------------------------------------------------------------------------

    def publish_device(self, info: mqtt.DeviceInfo) -> None:
        if self._connected.is_set() or self.state == "connecting":
            topic = mqtt.device_topic(self._site, self._gw, info.device)
            self.client.publish(topic, mqtt.json_encoder.encode(info), qos=1, retain=True)

    def publish_config_result(self, result: mqtt.ConfigResult) -> None:
        topic = mqtt.config_result_topic(self._site, self._gw)
        self.client.publish(topic, mqtt.json_encoder.encode(result), qos=1)
        self.stats.inc("config_results")
