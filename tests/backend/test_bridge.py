"""The backend's MQTT bridge against the real broker: a cancelled publish ends cancelled, whenever its PUBACK came.

Every worker of the backend (alert engine, receipts, ingest) is stopped by cancelling its task, and each publishes
through the bridge in a loop. On Python 3.11 ``asyncio.wait_for`` returns the result when the awaited future
completes in the same loop iteration as the task's cancellation: the cancel was lost, the alert engine (publishing
every round) ran on and the backend's shutdown waited for it forever (seen once under load: the app's lifespan
still stopping after 300 s, its MQTT thread never told to stop). The test puts the PUBACK and the cancel in one
iteration.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backend.ingest.bridge import MqttBridge
from backend.settings import Settings


@pytest.mark.asyncio
async def test_a_publish_cancelled_as_its_puback_arrives_ends_cancelled(
        broker: Any, unique_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(mqtt_host=broker.host, mqtt_port=broker.port, mqtt_client_id=f"be-{unique_id}",
                        jwt_secret="k" * 40)
    bridge = MqttBridge(settings, lambda _msg: None, [])
    await bridge.start()
    try:
        assert await bridge.wait_connected(30)
        # Hold the PUBACK where the paho thread hands it to the loop, to deliver it together with the cancel.
        deliver = bridge._published
        held: list[tuple[int, int]] = []
        arrived = asyncio.Event()

        def hold(mid: int, code: int) -> None:
            held.append((mid, code))
            arrived.set()

        monkeypatch.setattr(bridge, "_published", hold)
        publish = asyncio.create_task(bridge.publish(f"cds/test/{unique_id}", b"x", qos=1))
        await arrived.wait()
        deliver(*held[0])
        publish.cancel()
        with pytest.raises(asyncio.CancelledError):
            await publish
        monkeypatch.undo()
        await bridge.publish(f"cds/test/{unique_id}", b"y", qos=1)  # and the bridge goes on
    finally:
        await bridge.stop()
