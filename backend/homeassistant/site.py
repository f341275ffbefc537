"""One site as Home Assistant sees it (sans-IO): incoming MQTT messages in, messages to publish out.

The bridge's whole behaviour lives here; :mod:`.bridge` only moves bytes. Time is an argument (a monotonic
``now`` in seconds), so the throttling is tested without waiting.

- A meter is discovered the first time it is seen: its retained DeviceInfo (which arrives as soon as the bridge
  subscribes, so a restarted bridge finds every meter again before any reading) or its first reading. Its configs
  go out again when anything in them changes (gateway, firmware, the first exported energy), after every
  reconnection and when Home Assistant announces itself (its birth message says ``online``), as Home Assistant's
  documentation asks of discovery publishers.
- A meter's gateway is the one of its latest reading; a DeviceInfo moves it only if it is newer than the one that
  set it, because a meter moved between gateways leaves the old gateway's retained DeviceInfo behind and the
  broker replays both in any order.
- States are throttled per meter: at most one per ``interval_s``, always the latest reading's. A reading inside
  the interval makes the meter due at the interval's end (:meth:`SiteMirror.due`), so the last reading of a burst
  is never left unpublished.
- Configs are retained at QoS 1 (Home Assistant may start after them). States are retained at QoS 0: the next one
  replaces a lost one, but a restarted Home Assistant should show every meter at once rather than "unknown" until
  its next reading; the availability topics say when a retained state has gone stale.
- Hostile or broken input (not JSON, wrong types, a payload naming another site, gateway or meter than its topic)
  is counted by reason and dropped; nothing a gateway sends can raise out of here. The meters per site are
  capped, so a gateway that invents ids cannot fill Home Assistant's device registry (the device book, which the
  ingest checks, is not the bridge's to read).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import msgspec

from backend.homeassistant import discovery
from backend.homeassistant.state import MeterState
from protocol import homeassistant as ha
from protocol import mqtt

MAX_METERS: Final = 256
"""Meters one site's bridge shows; four times the meters a gateway may own by default (ingest's limit)."""

_state_encoder: Final = msgspec.json.Encoder()


class Outgoing(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(slots=True)
class Meter:
    device: str
    gateway: str
    state: MeterState
    firmware: str = ""
    hw_rev: int = 0
    info_seen_at: int = -1
    """``seen_at`` of the DeviceInfo that set ``gateway`` (-1: a reading set it)."""
    published: discovery.MeterInfo | None = None
    """What the configs on the broker say; None until they are published."""
    state_sent_at: float = -float("inf")
    dirty: bool = False
    """A reading newer than the published state is waiting for the end of the interval."""

    def info(self) -> discovery.MeterInfo:
        return discovery.MeterInfo(self.device, self.gateway, self.firmware, self.hw_rev, self.state.exports)


@dataclass(slots=True)
class Stats:
    """Counters of one bridge run, logged and read by the tests."""

    readings: int = 0
    replays: int = 0
    """Readings older than the one shown (sent again by a gateway), ignored."""
    configs: int = 0
    states: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    """Messages or readings dropped, by reason."""


class SiteMirror:
    """The core of one site's bridge."""

    def __init__(self, site: str, *, root: str, interval_s: float, max_power_w: float) -> None:
        self.site = site
        self.root = root
        self.interval_s = interval_s
        self.max_power_w = max_power_w
        self.meters: dict[str, Meter] = {}
        self.stats = Stats()
        self._birth = ha.birth_topic(root, site)

    def subscriptions(self) -> list[str]:
        """Plain (never shared) subscriptions: each gets a copy and takes nothing from the backend's group."""
        return [f"{mqtt.ROOT}/{self.site}/+/up/readings", f"{mqtt.ROOT}/{self.site}/+/devices/+", self._birth]

    def handle(self, topic: str, payload: bytes, now: float) -> list[Outgoing]:
        """One received message -> what to publish; never raises on bad input (it is counted instead)."""
        if topic == self._birth:
            return self.everything(now) if payload == ha.ONLINE.encode() else []
        try:
            site, gateway, rest = mqtt.split_topic(topic)
        except ValueError:
            return self._reject("topic")
        if site != self.site:  # only a broker without the bridge's ACL would deliver it
            return self._reject("topic")
        if rest == "up/readings":
            return self._readings(gateway, payload, now)
        if rest.startswith("devices/") and payload:  # an empty payload clears a retained DeviceInfo
            return self._device_info(gateway, rest.removeprefix("devices/"), payload)
        return [] if rest.startswith("devices/") else self._reject("topic")

    def everything(self, now: float) -> list[Outgoing]:
        """Every config and the latest state of every meter: after a reconnection or Home Assistant's birth."""
        out: list[Outgoing] = []
        for meter in self.meters.values():
            meter.published = None
            out += self._configs(meter)
            out += self._state(meter, now)
        return out

    def due(self, now: float) -> list[Outgoing]:
        """States whose interval has ended with a newer reading waiting."""
        out: list[Outgoing] = []
        for meter in self.meters.values():
            if meter.dirty and now - meter.state_sent_at >= self.interval_s:
                out += self._state(meter, now)
        return out

    def next_due(self) -> float | None:
        """The monotonic time :meth:`due` has something next, or None."""
        times = [m.state_sent_at + self.interval_s for m in self.meters.values() if m.dirty]
        return min(times, default=None)

    # --- input -----------------------------------------------------------------------------------------------

    def _reject(self, reason: str, n: int = 1) -> list[Outgoing]:
        self.stats.rejected[reason] += n
        return []

    def _readings(self, gateway: str, payload: bytes, now: float) -> list[Outgoing]:
        try:
            batch = mqtt.batch_decoder.decode(payload)
        except msgspec.DecodeError:  # also msgspec.ValidationError: wrong types, ranges, ids
            return self._reject("invalid")
        if batch.site != self.site or batch.gateway != gateway:
            return self._reject("topic_mismatch")
        touched: dict[str, Meter] = {}
        for reading in batch.readings:
            meter = self._meter(reading.device, gateway)
            if meter is None:
                self._reject("too_many_meters")
                continue
            self.stats.readings += 1
            if meter.state.feed(reading):  # a replay by a meter's former gateway does not move it back
                meter.gateway, meter.info_seen_at, meter.dirty = gateway, -1, True
                touched[meter.device] = meter
            else:
                self.stats.replays += 1
        out: list[Outgoing] = []
        for meter in touched.values():
            out += self._configs(meter)
            if now - meter.state_sent_at >= self.interval_s:
                out += self._state(meter, now)
        return out

    def _device_info(self, gateway: str, device: str, payload: bytes) -> list[Outgoing]:
        try:
            info = mqtt.device_decoder.decode(payload)
        except msgspec.DecodeError:
            return self._reject("invalid")
        if info.device != device:
            return self._reject("topic_mismatch")
        meter = self._meter(device, gateway)
        if meter is None:
            return self._reject("too_many_meters")
        if info.seen_at >= meter.info_seen_at and (meter.info_seen_at >= 0 or meter.state.latest is None):
            meter.gateway, meter.info_seen_at = gateway, info.seen_at
        if meter.gateway == gateway:  # another gateway's leftover DeviceInfo says nothing about this meter now
            meter.firmware, meter.hw_rev = info.firmware, info.hw_rev
        return self._configs(meter)

    def _meter(self, device: str, gateway: str) -> Meter | None:
        meter = self.meters.get(device)
        if meter is None and len(self.meters) < MAX_METERS:
            meter = self.meters[device] = Meter(device, gateway, MeterState(self.max_power_w))
        return meter

    # --- output ----------------------------------------------------------------------------------------------

    def _configs(self, meter: Meter) -> list[Outgoing]:
        info = meter.info()
        if info == meter.published:
            return []
        meter.published = info
        configs = discovery.configs(self.root, self.site, info)
        self.stats.configs += len(configs)
        return [Outgoing(topic, payload, 1, True) for topic, payload in configs]

    def _state(self, meter: Meter, now: float) -> list[Outgoing]:
        state = meter.state.state()
        if state is None:
            return []
        meter.state_sent_at, meter.dirty = now, False
        self.stats.states += 1
        return [Outgoing(ha.state_topic(self.site, meter.device), _state_encoder.encode(state), 0, True)]
