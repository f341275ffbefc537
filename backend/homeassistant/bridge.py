"""The bridge's MQTT shell: paho-mqtt 2.x around :class:`~backend.homeassistant.site.SiteMirror`.

paho's network thread delivers messages and reconnects with backoff; every message goes through the core under
one lock and what it returns is published at once. A second thread publishes throttled states when their interval
ends (the core says when, so it sleeps until then, not in a polling loop).

Session: MQTT 5 with a clean start and no session expiry. The bridge wants the latest state, not a backlog: while
it is away the broker queues nothing for it, and on every connection it subscribes again, receives the retained
DeviceInfos (so it knows every meter at once) and publishes every config and state it has. Its availability topic
says ``online`` (retained) once connected; the last will, and a clean stop, say ``offline``, which Home Assistant
shows as every meter of the site unavailable.

The user and client id are the bridge's own (protocol/homeassistant.py): the broker lets it read only its site's
readings and DeviceInfo through plain subscriptions and write only its site's discovery and state topics.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from backend.errors import ConfigError
from backend.homeassistant.site import Outgoing, SiteMirror
from backend.logs import configure_logging
from backend.settings import Settings
from protocol import homeassistant as ha
from protocol.ids import is_ident

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 3.0


class HomeAssistantBridge:
    """One site's bridge: :meth:`start`, then :meth:`stop` (which says offline first)."""

    def __init__(self, settings: Settings, site: str, password: str) -> None:
        if not is_ident(site):
            raise ConfigError(f"site {site!r} must match [a-z0-9][a-z0-9_-]{{0,62}}")
        root = settings.homeassistant_discovery_root
        if not ha.is_discovery_root(root):
            raise ConfigError("BACKEND_HOMEASSISTANT_DISCOVERY_ROOT must be topic levels of [A-Za-z0-9_-]")
        if settings.homeassistant_state_interval_s <= 0:
            raise ConfigError("BACKEND_HOMEASSISTANT_STATE_INTERVAL_S must be positive")
        self.settings = settings
        self.site = site
        self.mirror = SiteMirror(site, root=root, interval_s=settings.homeassistant_state_interval_s,
                                 max_power_w=settings.analytics_max_power_w)
        self.connected = threading.Event()
        self.lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._status = ha.bridge_status_topic(site)
        self.client = self._make_client(settings.homeassistant_username or ha.bridge_username(site), password)
        self._timer = threading.Thread(target=self._publish_due, name="ha-states", daemon=True)

    def _make_client(self, username: str, password: str) -> paho.Client:
        s = self.settings
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=ha.bridge_client_id(self.site),
                             protocol=paho.MQTTv5)
        client.username_pw_set(username, password)
        if s.mqtt_tls:
            client.tls_set(ca_certs=s.mqtt_ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.will_set(self._status, ha.OFFLINE.encode(), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # --- paho callbacks (its network thread) -----------------------------------------------------------------

    def _on_connect(self, client: paho.Client, _u: object, _f: paho.ConnectFlags, rc: ReasonCode,
                    _p: Properties | None = None) -> None:
        if rc.is_failure:
            log.warning("broker refused the bridge: %s", rc, extra={"site": self.site})
            return
        log.info("connected", extra={"site": self.site})
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.mirror.subscriptions()])
        client.publish(self._status, ha.ONLINE.encode(), qos=1, retain=True)
        with self.lock:
            self._send(self.mirror.everything(time.monotonic()))
        self.connected.set()

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: paho.DisconnectFlags, rc: ReasonCode,
                       _p: Properties | None = None) -> None:
        self.connected.clear()
        if not self._stopping.is_set():
            log.warning("disconnected from the broker: %s", rc, extra={"site": self.site})

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            rejected = sum(self.mirror.stats.rejected.values())
            self._send(self.mirror.handle(msg.topic, bytes(msg.payload), time.monotonic()))
            if sum(self.mirror.stats.rejected.values()) != rejected:
                log.warning("dropped input", extra={"topic": msg.topic, "rejected": dict(self.mirror.stats.rejected)})
        self._wake.set()

    # --- publishing ------------------------------------------------------------------------------------------

    def _send(self, messages: list[Outgoing]) -> None:
        # paho queues QoS 1 messages while disconnected and drops QoS 0 ones; both are published again by
        # everything() after the next connection, so nothing is lost for good.
        for m in messages:
            self.client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)

    def _publish_due(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before looking: a reading arriving from here on wakes the wait below
            with self.lock:
                self._send(self.mirror.due(time.monotonic()))
                next_due = self.mirror.next_due()
            timeout = None if next_due is None else max(next_due - time.monotonic(), 0.0)
            self._wake.wait(timeout)

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        self.client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port,
                                  keepalive=self.settings.mqtt_keepalive_s, clean_start=True, properties=props)
        self.client.loop_start()
        self._timer.start()

    def stop(self) -> None:
        """Say offline (a clean DISCONNECT does not fire the will), disconnect, stop the threads."""
        self._stopping.set()
        self._wake.set()
        self._timer.join(_STOP_TIMEOUT_S)
        if self.connected.is_set():
            info = self.client.publish(self._status, ha.OFFLINE.encode(), qos=1, retain=True)
            if info.rc == paho.MQTT_ERR_SUCCESS:
                info.wait_for_publish(_STOP_TIMEOUT_S)
        self.client.disconnect()
        self.client.loop_stop()
        log.info("stopped", extra={"site": self.site, "readings": self.mirror.stats.readings,
                                    "states": self.mirror.stats.states, "configs": self.mirror.stats.configs})


class BridgeMetrics(Collector):
    """``cds_homeassistant_*`` read from the core's counters at scrape time (one set of books, not two)."""

    def __init__(self, bridge: HomeAssistantBridge) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        b = self.bridge
        with b.lock:
            stats = b.mirror.stats
            figures = {"readings": stats.readings, "replays": stats.replays, "configs": stats.configs,
                       "states": stats.states}
            rejected = dict(stats.rejected)
            meters = len(b.mirror.meters)
        helps = {"readings": "readings taken from the site's batches", "replays": "readings older than the one "
                 "shown (sent again by a gateway), ignored", "configs": "discovery configs published",
                 "states": "states published"}
        for name, value in figures.items():
            family = CounterMetricFamily(f"cds_homeassistant_{name}", helps[name], labels=["site"])
            family.add_metric([b.site], value)
            yield family
        dropped = CounterMetricFamily("cds_homeassistant_rejected", "input dropped, by reason",
                                      labels=["site", "reason"])
        for reason, value in sorted(rejected.items()):
            dropped.add_metric([b.site, reason], value)
        yield dropped
        yield GaugeMetricFamily("cds_homeassistant_meters", "meters the bridge shows", value=meters)
        yield GaugeMetricFamily("cds_homeassistant_connected", "1 while connected to the broker",
                                value=1 if b.connected.is_set() else 0)


def read_password(settings: Settings) -> str:
    path = settings.homeassistant_password_file
    if not path:
        raise ConfigError("BACKEND_HOMEASSISTANT_PASSWORD_FILE must name the bridge's password file")
    try:
        password = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"BACKEND_HOMEASSISTANT_PASSWORD_FILE: cannot read {path!r}: {exc}") from exc
    if not password:
        raise ConfigError(f"BACKEND_HOMEASSISTANT_PASSWORD_FILE: {path!r} is empty")
    return password


def run(settings: Settings, site: str) -> int:
    """``python -m backend homeassistant --site SITE``: run until SIGTERM or SIGINT; ConfigError when misconfigured."""
    bridge = HomeAssistantBridge(settings, site, read_password(settings))
    configure_logging(settings.log_level)
    done = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.homeassistant_metrics_port:
        registry = CollectorRegistry(auto_describe=True)
        registry.register(BridgeMetrics(bridge))
        start_http_server(settings.homeassistant_metrics_port, addr=settings.host, registry=registry)
    bridge.start()
    done.wait()
    bridge.stop()
    return 0
