"""Adoption of an absent replica's MQTT session, so the surviving replicas take the whole load.

Measured with Mosquitto 2.0.11 (docs/operations.md): when a replica of a shared subscription dies, its
persistent session stays in the share group and the broker keeps queueing a share of the new messages there,
next to the messages that were in flight to it. Without help those readings wait until that replica restarts.

Every replica announces itself with a retained presence message on ``cds/v1/_backend/<group>/<client id>``
(``online=true`` on connect, ``online=false`` as its MQTT last will and on graceful shutdown). When a peer of
the same group has been offline for ``mqtt_adopt_after_s`` seconds, the online replica with the smallest client
id connects a second MQTT client *with the peer's client id* (``clean_start=False``): it resumes the peer's
session, receives its queue and its share of new messages, and feeds them into its own ingest (same batching,
ack after write). When the peer comes back it connects with its id, the broker takes the session over
and drops the adopter's connection, the adopter stops for good (an adopter never reconnects by itself; if its
connection is lost while the peer is still absent, e.g. a broker restart, adoption starts again after the
delay), and the messages it had not acknowledged yet are redelivered to the peer — rewritten idempotently.
Choosing one adopter by client id keeps two survivors from taking the session from each other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final

import msgspec

from backend.ingest.bridge import MqttBridge
from protocol import mqtt

if TYPE_CHECKING:
    from backend.ingest.service import IngestService

log = logging.getLogger(__name__)

PRESENCE_ROOT: Final = f"{mqtt.ROOT}/_backend"


class Presence(msgspec.Struct, frozen=True):
    """Retained ``cds/v1/_backend/<group>/<client id>``."""

    online: bool
    client_id: str
    ts: int = 0


presence_encoder: Final = msgspec.json.Encoder()
presence_decoder: Final = msgspec.json.Decoder(Presence)


def presence_topic(group: str, client_id: str) -> str:
    return f"{PRESENCE_ROOT}/{group}/{client_id}"


def presence_payload(client_id: str, online: bool) -> bytes:
    return presence_encoder.encode(Presence(online=online, client_id=client_id, ts=int(time.time() * 1000)))


class SessionAdopter:
    """Watches peer presence and runs adopter bridges for absent peers (see module docstring)."""

    def __init__(self, ingest: IngestService) -> None:
        self.ingest = ingest
        self.settings = ingest.settings
        self.me = ingest.bridge.client_id
        self.online: dict[str, bool] = {}
        self.offline_since: dict[str, float] = {}
        self.adopted: dict[str, MqttBridge] = {}
        self._task: asyncio.Task[None] | None = None

    def on_presence(self, presence: Presence) -> None:
        peer = presence.client_id
        if peer == self.me:
            return
        self.online[peer] = presence.online
        if presence.online:
            self.offline_since.pop(peer, None)
            bridge = self.adopted.pop(peer, None)
            if bridge is not None:  # normally it was already taken over by the peer's own connection
                asyncio.get_running_loop().create_task(bridge.stop())
        else:
            self.offline_since.setdefault(peer, time.monotonic())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="session-adopter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for bridge in list(self.adopted.values()):
            await bridge.stop()
        self.adopted.clear()

    def _i_am_adopter(self) -> bool:
        online_peers = [p for p, up in self.online.items() if up]
        return all(self.me < p for p in online_peers)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.settings.mqtt_adopt_after_s / 4))
            if not self.ingest.bridge.connected or not self._i_am_adopter():
                continue
            now = time.monotonic()
            for peer, since in list(self.offline_since.items()):
                if peer not in self.adopted and now - since >= self.settings.mqtt_adopt_after_s:
                    await self._adopt(peer)

    async def _adopt(self, peer: str) -> None:
        log.warning("adopting the session of an absent replica", extra={"peer": peer, "adopter": self.me})

        def lost() -> None:
            bridge = self.adopted.pop(peer, None)
            if bridge is not None:
                log.info("adopted session ended", extra={"peer": peer, "peer_online": self.online.get(peer)})
                asyncio.get_running_loop().create_task(bridge.stop())
            if not self.online.get(peer):  # e.g. a broker restart: adopt again after the delay
                self.offline_since.setdefault(peer, time.monotonic())

        bridge = MqttBridge(self.settings, self.ingest.on_message, [], client_id=peer, on_lost=lost)
        self.adopted[peer] = bridge
        self.offline_since.pop(peer, None)
        await bridge.start()
