"""What the backend knows about sites, gateways and meters, rebuilt from retained MQTT messages.

Every replica subscribes (non-shared) to the retained ``.../status`` (GatewayStatus, with the gateway's last
will) and ``.../devices/{device}`` (DeviceInfo) topics and to ``.../up/config-result``. The broker hands the
retained state to each replica when it subscribes, so this registry is a cache of broker state, not backend
state: a restarted replica is complete again as soon as it has subscribed. "Last seen" of a meter combines its
DeviceInfo ``seen_at``, the readings this replica ingested, and InfluxDB (see backend/api/devices.py).

Config results: ``PUT /api/v1/aicss/config`` waits on :meth:`Registry.wait_config_result`; results are also
kept (bounded) so an answer arriving on another replica's watch is still visible here.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Final

import msgspec

from protocol.mqtt import ConfigResult, DeviceInfo, GatewayStatus

_MAX_RESULTS: Final = 10_000


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
    """In-memory view of gateways, devices and config results; mutated only on the asyncio loop."""

    def __init__(self) -> None:
        self.gateways: dict[tuple[str, str], GatewayState] = {}
        self.devices: dict[str, DeviceState] = {}
        self.last_reading_ms: dict[str, int] = {}
        self.device_home: dict[str, tuple[str, str]] = {}
        self._results: OrderedDict[tuple[str, int], ConfigResult] = OrderedDict()
        self._waiters: dict[tuple[str, int], list[asyncio.Future[ConfigResult]]] = {}

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
        self.device_home[device] = (site, gateway)

    def note_readings(self, site: str, gateway: str, last_ts: dict[str, int]) -> None:
        """Readings ingested by this replica: newest measured time per device."""
        for device, ts in last_ts.items():
            if ts > self.last_reading_ms.get(device, 0):
                self.last_reading_ms[device] = ts
            self.device_home.setdefault(device, (site, gateway))

    def config_result(self, result: ConfigResult) -> None:
        key = (result.device, result.request_id)
        self._results[key] = result
        self._results.move_to_end(key)
        while len(self._results) > _MAX_RESULTS:
            self._results.popitem(last=False)
        for fut in self._waiters.pop(key, []):
            if not fut.done():
                fut.set_result(result)

    def known_result(self, device: str, request_id: int) -> ConfigResult | None:
        return self._results.get((device, request_id))

    async def wait_config_result(self, device: str, request_id: int, timeout: float) -> ConfigResult | None:
        """The meter's answer to request ``request_id``, or None when none arrived within ``timeout`` s."""
        known = self.known_result(device, request_id)
        if known is not None:
            return known
        fut: asyncio.Future[ConfigResult] = asyncio.get_running_loop().create_future()
        key = (device, request_id)
        self._waiters.setdefault(key, []).append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(key, [])
            if fut in waiters:
                waiters.remove(fut)
            if not waiters:
                self._waiters.pop(key, None)
