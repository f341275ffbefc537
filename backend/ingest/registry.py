"""What the backend knows about gateways and meters, rebuilt from retained MQTT messages.

Every replica subscribes (non-shared) to the retained ``.../status`` (GatewayStatus, with the gateway's last
will) and ``.../devices/{device}`` (DeviceInfo) topics and to ``.../up/config-result``. The broker hands the
retained state to each replica when it subscribes, so this registry is a cache of broker state, not backend
state: a restarted replica is complete again as soon as it has subscribed. Who owns a meter is not decided here
but by the device book (devicebook.py); only DeviceInfo the book accepted reaches :meth:`Registry.update_device`.

Config results: ``PUT /api/v1/aicss/config`` opens a request (:meth:`Registry.config_request`) *before* it
publishes the CONFIG, and a result is accepted only for a request open on this replica, from the gateway it was
sent to. Every replica sees every result (the subscription is not shared); the others ignore it. So a result
published ahead with a guessed request id, or by another gateway, answers nothing.

Refusals per gateway (provisioning, rate limits) are counted here for the status APIs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import msgspec

from protocol.mqtt import ConfigResult, DeviceInfo, GatewayStatus


class GatewayState(msgspec.Struct):
    site: str
    gateway: str
    status: GatewayStatus
    received_at_ms: int


class DeviceState(msgspec.Struct):
    site: str
    gateway: str
    device: str
    info: DeviceInfo
    received_at_ms: int


class Registry:
    """In-memory view of gateways, devices and open config requests; mutated only on the asyncio loop."""

    def __init__(self) -> None:
        self.gateways: dict[tuple[str, str], GatewayState] = {}
        self.devices: dict[str, DeviceState] = {}
        self.last_reading_ms: dict[str, int] = {}
        self.refused: dict[tuple[str, str], dict[str, int]] = {}
        """(site, gateway) → refusal reason → messages or readings refused on this replica (the keys are
        gateways the broker let publish, so their number is bounded by its users)."""
        self._open: dict[tuple[str, int], tuple[str, str, asyncio.Future[ConfigResult]]] = {}

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    def update_gateway(self, site: str, gateway: str, status: GatewayStatus | None) -> None:
        """A retained status (None: the retained message was cleared)."""
        if status is None:
            self.gateways.pop((site, gateway), None)
            return
        self.gateways[(site, gateway)] = GatewayState(site, gateway, status, self._now_ms())

    def update_device(self, site: str, gateway: str, device: str, info: DeviceInfo | None) -> None:
        if info is None:
            self.devices.pop(device, None)
            return
        self.devices[device] = DeviceState(site, gateway, device, info, self._now_ms())

    def note_readings(self, last_ts: dict[str, int]) -> None:
        """Readings ingested by this replica: newest measured time per device."""
        for device, ts in last_ts.items():
            if ts > self.last_reading_ms.get(device, 0):
                self.last_reading_ms[device] = ts

    def note_refused(self, site: str, gateway: str, reason: str, count: int = 1) -> None:
        counts = self.refused.setdefault((site, gateway), {})
        counts[reason] = counts.get(reason, 0) + count

    def is_open(self, device: str, request_id: int) -> bool:
        return (device, request_id) in self._open

    @contextlib.contextmanager
    def config_request(self, device: str, request_id: int, site: str,
                       gateway: str) -> Iterator[asyncio.Future[ConfigResult]]:
        """A request open while the block runs; its future gets the meter's answer from that gateway."""
        key = (device, request_id)
        fut: asyncio.Future[ConfigResult] = asyncio.get_running_loop().create_future()
        self._open[key] = (site, gateway, fut)
        try:
            yield fut
        finally:
            self._open.pop(key, None)

    def config_result(self, site: str, gateway: str, result: ConfigResult) -> bool:
        """Hand a result to its open request; False when none is open here for it from that gateway."""
        entry = self._open.get((result.device, result.request_id))
        if entry is None or entry[:2] != (site, gateway) or entry[2].done():
            return False
        entry[2].set_result(result)
        return True
