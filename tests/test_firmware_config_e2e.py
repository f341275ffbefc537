"""A calibration sent from the API reaches the real firmware and changes what it measures.

``PUT /api/v1/aicss/config`` -> backend (in-process, its lifespan running) -> real Mosquitto -> the gateway
(``python -m gateway run`` as a subprocess) -> serial frames -> the meter firmware's AVR ELF in simavr
(:mod:`sim.firmware`, the same build that is flashed) -> CONFIG_RESULT back up the same way, and the meter's next
readings, stored in the real InfluxDB, carry the new calibration: a voltage gain 10 % higher reads 10 % more volts,
and ``UNCALIBRATED`` clears once the values are stored in the firmware's EEPROM.

The meter is provisioned the way a new one is in the field: the device book claims it at first sight from its
gateway's DeviceInfo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from devstack.influxdb import InfluxService
from devstack.mosquitto import MosquittoService
from protocol import frames
from sim.firmware import FirmwareBuild, FirmwareMeter, build_firmware
from tests.backend.conftest import make_settings, purge_session, token
from tests.gateway.gwharness import GatewayProcess

pytestmark = pytest.mark.firmware

DEVICE = "a1c55f12e0000001"
VRMS = 220.0
FACTORY_V_GAIN = 976_563
"""firmware/lib/board.h: uV of mains per ADC count with the reference front end."""


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> FirmwareBuild:
    build, why = build_firmware(tmp_path_factory.mktemp("fw"))
    if build is None:  # CI must not pass by skipping: the toolchain is part of the setup
        pytest.fail(f"{why}. Run `bash scripts/setup.sh`.", pytrace=False)
    return build


@pytest.fixture
def meter(firmware: FirmwareBuild, tmp_path: Path) -> Iterator[FirmwareMeter]:
    links = tmp_path / "links"
    links.mkdir()
    fw = FirmwareMeter(firmware, tmp_path, links, DEVICE, vrms=VRMS, irms=5.0, phase_deg=0.0).start()
    yield fw
    fw.stop()


def _readings(influx: InfluxService, db: str) -> list[dict[str, Any]]:
    rows = influx.rows(f'SELECT vrms, flags, seq, boot FROM "{db}"."raw"."readings" WHERE device = \'{DEVICE}\'',
                       db=db)  # fmt: skip
    # InfluxDB 1.x keeps each field apart and a write is not atomic across them: a query racing the write of a
    # point can see its first fields without the last (flags None, seen under a CPU hog). Not there yet, then.
    return rows if all(None not in row.values() for row in rows) else []


@pytest.mark.asyncio
async def test_put_config_reaches_the_firmware_in_simavr_and_its_next_readings_use_the_new_v_gain(
    broker: MosquittoService, influx: InfluxService, unique_id: str, tmp_path: Path, meter: FirmwareMeter,
    wait_for_async: Callable[..., Any],
) -> None:  # fmt: skip
    settings = make_settings(broker, influx, unique_id)
    # The harness's 2 s for a meter's CONFIG_RESULT suits the Python meters, which answer at once. The firmware in
    # simavr is stopped between readings to pace it to the wall clock (sim/firmware.py) and runs its main loop on
    # a shared core, so its answer can come a report period and more later: seen under the CPU hog, "no
    # CONFIG_RESULT within 2 s". A real board answers in milliseconds; the gateway's default is 10 s.
    gw = GatewayProcess(tmp_path, broker, unique_id, [str(meter.link_path.parent / "*")],
                        serial={"config_timeout_s": 25.0})
    app = create_app(settings)
    try:
        async with AsyncTestClient(app) as client:
            assert await app.state.services.ingest.bridge.wait_connected(10)
            gw.start()
            book = app.state.services.devices.book
            await wait_for_async(lambda: book.owner(DEVICE), timeout=30, what="the meter claimed from its DeviceInfo")
            assert (book.owner(DEVICE).site, book.owner(DEVICE).gateway) == (unique_id, gw.gateway)
            before = await wait_for_async(lambda: _readings(influx, unique_id), timeout=30,
                                          what="the firmware's readings in InfluxDB")  # fmt: skip
            # factory gains: the firmware says so on every reading, and measures the injected mains
            assert before[0]["flags"] & frames.FLAG_UNCALIBRATED
            assert before[0]["vrms"] == pytest.approx(VRMS, rel=0.01)

            v_gain = FACTORY_V_GAIN * 11 // 10
            answer = await client.put("/api/v1/aicss/config", headers=token(client, "operator"),
                                      json={"device": DEVICE, "v_gain": v_gain, "timeout_s": 30})  # fmt: skip
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["status"] == "applied", body
            # the meter echoes what it stored, the fields not sent kept
            assert body["result"]["v_gain"] == v_gain and body["result"]["report_period_ms"] == 1000

            def calibrated() -> list[dict[str, Any]]:
                # a reading carries the flags of its own window: only those measured after the CONFIG lack it
                return [r for r in _readings(influx, unique_id) if not r["flags"] & frames.FLAG_UNCALIBRATED]

            after = await wait_for_async(calibrated, timeout=30, what="readings measured with the new calibration")
            assert after[0]["vrms"] == pytest.approx(before[0]["vrms"] * v_gain / FACTORY_V_GAIN, rel=0.002)
            assert after[0]["boot"] == before[0]["boot"]  # applied live: no reset
            assert gw.status()["counters"].get("config_results", 0) == 1
    finally:
        gw.stop()
        purge_session(broker.host, broker.port, settings.resolved_client_id())
