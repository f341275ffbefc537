"""Bidirectional meters through the gateway, and every pairing of old and new on both sides of MQTT.

- old meter (firmware 1.0: READING, import register only) + new gateway: its readings are "import only", export 0;
- new meter (firmware 1.1: READING2, signed power, import and export registers) + new gateway: both registers;
- both side by side on one gateway (the real gateway process, meters simulated on ptys);
- new gateway's payload -> old backend (a Reading Struct without the export field) and old gateway's payload ->
  new backend: msgspec's schema evolution (unknown fields ignored, new fields defaulted) keeps both working.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
from gwharness import Collector, GatewayProcess, check_delivery

from protocol import frames, mqtt
from protocol.ids import DeviceId, Ident
from sim.runner import MeterRunner

NOON_MS = 1_763_737_200_000  # 2025-11-21 12:00 in São Paulo: a PV roof exports
PERIOD_MS = 20
DEVICE = "a1c5500000000001"


class OldReading(msgspec.Struct, frozen=True):
    """protocol.mqtt.Reading as an old backend knows it: before ``energy_export_mwh`` (its defaults, no forbid)."""

    device: DeviceId
    boot: int
    seq: int
    ts: int
    vrms: float
    irms: float
    p: float
    s: float
    pf: float
    freq: float
    energy_mwh: int
    flags: int = 0


class OldReadingBatch(msgspec.Struct, frozen=True):
    site: Ident
    gateway: Ident
    readings: Annotated[list[OldReading], msgspec.Meta(min_length=1)]
    sent_at: int = 0
    v: int = 1
    batch_id: str = ""


OLD_FRAME = frames.Reading(7, 7000, 127_100, 3_150, 3_900, 4_003, 974, 60_010, 1_234_567, 0)
NEW_FRAME = frames.Reading2(7, 7000, 221_400, 14_900, -32_950, 32_988, -999, 59_990, 1_234_567, 0, 89_012)


def test_reading_and_batch_accept_unknown_fields() -> None:
    """What lets an old backend read a newer gateway: msgspec's default, checked rather than assumed."""
    assert mqtt.Reading.__struct_config__.forbid_unknown_fields is False
    assert mqtt.ReadingBatch.__struct_config__.forbid_unknown_fields is False


def test_old_meter_with_new_gateway_is_import_only() -> None:
    r = mqtt.reading_from_frame(DEVICE, 3, 1_000, OLD_FRAME)
    assert (r.p, r.energy_mwh, r.energy_export_mwh) == (390.0, 1_234_567, 0)


def test_new_meter_with_new_gateway_carries_signed_power_and_both_registers() -> None:
    r = mqtt.reading_from_frame(DEVICE, 3, 1_000, NEW_FRAME)
    assert (r.p, r.pf, r.energy_mwh, r.energy_export_mwh) == (-3295.0, -0.999, 1_234_567, 89_012)
    assert mqtt.batch_decoder.decode(
        mqtt.json_encoder.encode(mqtt.ReadingBatch(site="s1", gateway="gw1", readings=[r]))
    ).readings == [r]


def test_new_gateway_payload_decodes_in_old_backend() -> None:
    readings = [mqtt.reading_from_frame(DEVICE, 3, 1_000, f) for f in (OLD_FRAME, NEW_FRAME)]
    batch = mqtt.ReadingBatch(site="s1", gateway="gw1", readings=readings)
    payload = mqtt.json_encoder.encode(batch)
    assert b'"energy_export_mwh":89012' in payload
    old = msgspec.json.decode(payload, type=OldReadingBatch)
    assert [(r.p, r.energy_mwh) for r in old.readings] == [(390.0, 1_234_567), (-3295.0, 1_234_567)]


def test_old_gateway_payload_decodes_in_new_backend_as_import_only() -> None:
    old = OldReadingBatch(
        site="s1", gateway="gw1", readings=[OldReading(DEVICE, 3, 7, 1_000, 127.1, 3.15, 390.0, 400.3, 0.974, 60.01,
                                                       1_234_567)]
    )  # fmt: skip
    payload = msgspec.json.encode(old)
    assert b"energy_export_mwh" not in payload
    (r,) = mqtt.batch_decoder.decode(payload).readings
    assert (r.energy_mwh, r.energy_export_mwh) == (1_234_567, 0)


@pytest.mark.parametrize("bad", [-1, 2**63], ids=["negative", "above_i64"])
def test_export_register_out_of_range_is_refused(bad: int) -> None:
    r = msgspec.structs.asdict(mqtt.reading_from_frame(DEVICE, 3, 1_000, NEW_FRAME))
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode({**r, "energy_export_mwh": bad}), type=mqtt.Reading)


def test_old_and_new_meters_side_by_side_on_the_real_gateway(
    tmp_path: Path, unique_id: str, wait_for: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess], collector_factory: Callable[[str], Collector],
) -> None:  # fmt: skip
    runner = MeterRunner(speed=1.0, start_ms=NOON_MS, link_dir=tmp_path / "links", seed=unique_id)
    old = runner.add_meter(report_period_ms=PERIOD_MS, queue_capacity=256, bidirectional=False)
    new = runner.add_meter(report_period_ms=PERIOD_MS, queue_capacity=256, pv_kwp=8.0, nominal_v=220)
    runner.start()
    try:
        collector = collector_factory(unique_id)
        gw = gateway_factory(unique_id, [str(runner.link_dir / "*")])
        gw.start()
        wait_for(lambda: len(collector.keys(old.device)) >= 30 and len(collector.keys(new.device)) >= 30, 20,
                 what="readings from both meters")  # fmt: skip
        check_delivery([old, new], collector, gw, wait_for)
    finally:
        runner.stop()
    assert runner.error is None, runner.error
    olds = [r for k, r in collector.readings.items() if k[0] == old.device]
    news = sorted((r for k, r in collector.readings.items() if k[0] == new.device), key=lambda r: r.seq)
    assert olds and all(r.energy_export_mwh == 0 for r in olds)
    assert all(r.p < 0 and r.pf < 0 for r in news)  # noon: the PV roof out-produces the house
    assert news[-1].energy_export_mwh > news[0].energy_export_mwh > 0
    assert {r.energy_mwh for r in news} == {news[0].energy_mwh}  # nothing imported while exporting
    truth = {(p.boot, p.seq): p.frame for p in new.truth().produced}
    assert all(r.energy_export_mwh == truth[(r.boot, r.seq)].energy_export_mwh for r in news)
    status = gw.status()
    meters = {m["device"]: m for m in status["meters"]}
    assert meters[old.device]["firmware"] == "1.0.0" and meters[new.device]["firmware"] == "1.1.0"
    assert meters[new.device]["last_reading"]["export_kwh"] > 0
    assert meters[old.device]["last_reading"]["export_kwh"] == 0
