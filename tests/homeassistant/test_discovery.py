"""The discovery configs against Home Assistant's documented MQTT sensor schema, and the sans-IO core.

The schema below is written from Home Assistant's documentation (integrations/sensor.mqtt: the configuration
variables and which are required; integrations/sensor: the units each device class takes; the Energy dashboard:
energy sensors need ``total``/``total_increasing`` and an energy unit). Home Assistant drops keys it does not know
without a word, so the schema forbids them: a misspelt key would otherwise ship unnoticed.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import msgspec
import pytest

from backend.homeassistant import discovery
from backend.homeassistant.site import MAX_METERS, SiteMirror
from backend.homeassistant.state import MeterState, RegisterGuard, Sample
from protocol import homeassistant as ha
from protocol import mqtt
from protocol.mqtt import DeviceInfo, Reading, ReadingBatch

SITE, GW, DEV = "casa-1", "gw-1", "a1c5500000000001"
ROOT = ha.DEFAULT_DISCOVERY_ROOT
TEMPLATE = {"type": "string", "pattern": r"^\{\{.*\}\}$"}
TOPIC = {"type": "string", "minLength": 1, "pattern": r"^[^#+]+$"}  # a topic to subscribe to, not a filter

AVAILABILITY = {
    "type": "object", "additionalProperties": False, "required": ["topic"],
    "properties": {"topic": TOPIC, "payload_available": {"type": "string"},
                   "payload_not_available": {"type": "string"}, "value_template": TEMPLATE},
}
DEVICE = {
    "type": "object", "additionalProperties": False, "anyOf": [{"required": ["identifiers"]},
                                                               {"required": ["connections"]}],
    "properties": {
        "configuration_url": {"type": "string"}, "connections": {"type": "array"},
        "hw_version": {"type": "string"}, "identifiers": {"oneOf": [{"type": "string"},
                                                                    {"type": "array", "items": {"type": "string"}}]},
        "manufacturer": {"type": "string"}, "model": {"type": "string"}, "model_id": {"type": "string"},
        "name": {"type": "string"}, "serial_number": {"type": "string"}, "suggested_area": {"type": "string"},
        "sw_version": {"type": "string"}, "via_device": {"type": "string"},
    },
}


def units(device_class: str, allowed: list[str], state_classes: list[str]) -> dict[str, Any]:
    return {"if": {"properties": {"device_class": {"const": device_class}}, "required": ["device_class"]},
            "then": {"required": ["unit_of_measurement", "state_class"],
                     "properties": {"unit_of_measurement": {"enum": allowed}, "state_class": {"enum": state_classes}}}}


MQTT_SENSOR_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    # state_topic is HA's only required key; a device block needs a unique_id (HA refuses it otherwise), and the
    # Energy dashboard needs the classes and the unit
    "required": ["state_topic", "unique_id", "device", "device_class", "state_class", "unit_of_measurement"],
    "properties": {
        "availability": {"type": "array", "minItems": 1, "items": AVAILABILITY},
        "availability_mode": {"enum": ["all", "any", "latest"]},
        "availability_template": TEMPLATE, "availability_topic": TOPIC,
        "default_entity_id": {"type": "string"}, "device": DEVICE,
        "device_class": {"enum": ["apparent_power", "current", "energy", "frequency", "power", "power_factor",
                                  "voltage"]},
        "enabled_by_default": {"type": "boolean"}, "encoding": {"type": "string"},
        "entity_category": {"enum": ["diagnostic"]}, "entity_picture": {"type": "string"},
        "expire_after": {"type": "integer", "minimum": 0}, "force_update": {"type": "boolean"},
        "icon": {"type": "string"}, "json_attributes_template": TEMPLATE, "json_attributes_topic": TOPIC,
        "last_reset_value_template": TEMPLATE, "name": {"type": ["string", "null"]},
        "object_id": {"type": "string"}, "options": {"type": "array"},
        "origin": {"type": "object", "additionalProperties": False, "required": ["name"],
                   "properties": {"name": {"type": "string"}, "sw_version": {"type": "string"},
                                  "support_url": {"type": "string"}}},
        "payload_available": {"type": "string"}, "payload_not_available": {"type": "string"},
        "platform": {"const": "sensor"}, "qos": {"enum": [0, 1, 2]},
        "state_class": {"enum": ["measurement", "measurement_angle", "total", "total_increasing"]},
        "state_topic": TOPIC, "suggested_display_precision": {"type": "integer", "minimum": 0},
        "unique_id": {"type": "string", "minLength": 1}, "unit_of_measurement": {"type": ["string", "null"]},
        "value_template": TEMPLATE,
    },
    "not": {"required": ["availability", "availability_topic"]},  # "must not be used together"
    "allOf": [
        units("energy", ["Wh", "kWh", "MWh", "GWh", "J", "kJ", "MJ", "GJ"], ["total", "total_increasing"]),
        units("power", ["W", "kW", "MW", "GW"], ["measurement"]),
        units("voltage", ["V", "mV"], ["measurement"]),
        units("current", ["A", "mA"], ["measurement"]),
        {"if": {"properties": {"device_class": {"const": "power_factor"}}, "required": ["device_class"]},
         "then": {"properties": {"unit_of_measurement": {"enum": ["%", None]}}}},
    ],
}
VALIDATOR = jsonschema_rs.validator_for(MQTT_SENSOR_SCHEMA)


def meter(exports: bool = True) -> discovery.MeterInfo:
    return discovery.MeterInfo(DEV, GW, "1.2.3", 1, exports)


def test_every_config_is_a_valid_home_assistant_mqtt_sensor() -> None:
    configs = discovery.configs(ROOT, SITE, meter())
    assert len(configs) == 6
    for topic, payload in configs:
        doc = json.loads(payload)
        errors = [e.message for e in VALIDATOR.iter_errors(doc)]
        assert errors == [], (topic, errors)
        assert topic == f"homeassistant/{SITE}/sensor/cds_{DEV}/{doc['unique_id'].removeprefix(f'cds_{DEV}_')}/config"


def test_schema_catches_what_home_assistant_energy_would_refuse() -> None:
    """The schema is not a rubber stamp: the mistakes that keep a sensor out of Energy fail it."""
    (_, payload) = discovery.configs(ROOT, SITE, meter())[4]
    good = json.loads(payload)
    assert good["device_class"] == "energy" and VALIDATOR.is_valid(good)
    for change in ({"state_class": "measurement"}, {"unit_of_measurement": "mWh"}, {"unit_of_measurment": "kWh"},
                   {"availability_topic": "x"}):
        assert not VALIDATOR.is_valid({**good, **change}), change


def test_energy_power_voltage_current_and_power_factor_have_homeassistants_classes() -> None:
    by_key = {json.loads(p)["unique_id"].rsplit("_", 1)[-1]: json.loads(p)
              for _, p in discovery.configs(ROOT, SITE, meter())}
    assert {k: (c["device_class"], c["state_class"], c["unit_of_measurement"]) for k, c in by_key.items()} == {
        "power": ("power", "measurement", "W"), "voltage": ("voltage", "measurement", "V"),
        "current": ("current", "measurement", "A"), "factor": ("power_factor", "measurement", "%"),
        "energy": ("energy", "total_increasing", "kWh"), "export": ("energy", "total_increasing", "kWh"),
    }
    config = by_key["energy"]
    assert config["device"] == {"identifiers": [f"cds_{DEV}"], "name": f"Medidor {DEV}", "manufacturer": "CDS",
                                "model": "AICSS", "serial_number": DEV, "sw_version": "1.2.3", "hw_version": "1"}
    assert [a["topic"] for a in config["availability"]] == [
        ha.bridge_status_topic(SITE), mqtt.status_topic(SITE, GW), mqtt.device_topic(SITE, GW, DEV)]
    assert config["availability_mode"] == "all"


def test_no_export_sensor_until_the_meter_exports() -> None:
    keys = [json.loads(p)["unique_id"] for _, p in discovery.configs(ROOT, SITE, meter(exports=False))]
    assert f"cds_{DEV}_energy_export" not in keys and len(keys) == 5


# --- the sans-IO core ----------------------------------------------------------------------------------------


def reading(seq: int, ts: int, energy: int, *, boot: int = 1, export: int = 0) -> Reading:
    return Reading(device=DEV, boot=boot, seq=seq, ts=ts, vrms=127.0, irms=3.4, p=410.5, s=432.0, pf=0.95,
                   freq=60.0, energy_mwh=energy, energy_export_mwh=export)


def batch(*readings: Reading, site: str = SITE, gateway: str = GW) -> bytes:
    return mqtt.json_encoder.encode(ReadingBatch(site=site, gateway=gateway, readings=list(readings)))


def mirror(interval_s: float = 10.0) -> SiteMirror:
    return SiteMirror(SITE, root=ROOT, interval_s=interval_s, max_power_w=50_000.0)


def test_first_reading_discovers_and_publishes_state_in_kwh_and_percent() -> None:
    m = mirror()
    out = m.handle(mqtt.readings_topic(SITE, GW), batch(reading(1, 1_000_000, 123_456_789, export=5_500_210)), 0.0)
    configs = [o for o in out if o.topic.endswith("/config")]
    (state,) = [o for o in out if o.topic == ha.state_topic(SITE, DEV)]
    assert len(configs) == 6 and all(o.qos == 1 and o.retain for o in configs)
    assert (state.qos, state.retain) == (0, True)
    assert msgspec.json.decode(state.payload) == {"power": 410.5, "voltage": 127.0, "current": 3.4,
                                                  "power_factor": 95.0, "energy": 123.456789,
                                                  "energy_export": 5.50021, "ts": 1_000_000}


def test_states_are_throttled_and_the_last_reading_of_a_burst_is_published_when_due() -> None:
    m = mirror(interval_s=10.0)
    topic = mqtt.readings_topic(SITE, GW)
    m.handle(topic, batch(reading(1, 1000, 10)), 0.0)
    assert m.handle(topic, batch(reading(2, 2000, 20)), 1.0) == []  # inside the interval: nothing yet
    assert m.next_due() == 10.0 and m.due(9.9) == []
    (state,) = m.due(10.0)
    assert msgspec.json.decode(state.payload)["ts"] == 2000 and m.next_due() is None


def test_replayed_readings_never_move_a_sensor_back() -> None:
    m = mirror(interval_s=0.0)
    topic = mqtt.readings_topic(SITE, GW)
    m.handle(topic, batch(reading(5, 5000, 500)), 0.0)
    assert m.handle(topic, batch(reading(3, 3000, 300), reading(4, 4000, 400)), 1.0) == []
    assert m.stats.replays == 2
    (state,) = m.handle(topic, batch(reading(6, 1, 600)), 2.0)  # same boot: seq decides, not a wrong clock
    assert msgspec.json.decode(state.payload)["energy"] == 600 / 1e6


@pytest.mark.parametrize(("samples", "expected"), [
    pytest.param([(1, 1000), (2, 900_000_000), (3, 1010)], 1010, id="spike_up_dropped"),
    pytest.param([(1, 5000), (2, 10), (3, 5010)], 5010, id="dip_dropped"),
    pytest.param([(1, 5000), (2, 10), (3, 20)], 20, id="reset_confirmed_by_the_next_reading"),
    pytest.param([(1, 5000), (2, 10)], 5000, id="reset_held_until_confirmed"),
])
def test_register_guard_follows_the_store_rules(samples: list[tuple[int, int]], expected: int) -> None:
    guard = RegisterGuard(max_power_w=50_000.0)
    for i, mwh in samples:
        guard.feed(Sample(i * 60_000, 1, mwh))
    assert guard.accepted is not None and guard.accepted.mwh == expected


def test_a_lower_register_under_a_new_boot_is_a_reset_at_once() -> None:
    state = MeterState(max_power_w=50_000.0)
    state.feed(reading(9, 60_000, 5000, boot=1))
    state.feed(reading(1, 120_000, 10, boot=2))
    assert state.imported.kwh == 10 / 1e6


@pytest.mark.parametrize("payload", [
    pytest.param(b"", id="empty"), pytest.param(b"{not json", id="not_json"), pytest.param(b"[]", id="array"),
    pytest.param(b'{"site": "casa-1", "gateway": "gw-1", "readings": [{"device": 7}]}', id="wrong_types"),
    pytest.param(b'{"site": "casa-1", "gateway": "gw-1", "readings": []}', id="no_readings"),
])
def test_hostile_payloads_are_counted_never_raised(payload: bytes) -> None:
    m = mirror()
    assert m.handle(mqtt.readings_topic(SITE, GW), payload, 0.0) == []
    assert m.stats.rejected == {"invalid": 1} and m.meters == {}


def test_payload_naming_another_site_or_gateway_than_its_topic_is_refused() -> None:
    m = mirror()
    assert m.handle(mqtt.readings_topic(SITE, GW), batch(reading(1, 1, 1), gateway="gw-2"), 0.0) == []
    assert m.handle(mqtt.device_topic(SITE, GW, DEV), mqtt.json_encoder.encode(
        DeviceInfo(device="00000000000000ff", firmware="1", hw_rev=1, boot=1, report_period_ms=1000)), 0.0) == []
    assert m.stats.rejected == {"topic_mismatch": 2}


def test_meters_per_site_are_capped() -> None:
    m = mirror()
    readings = [Reading(device=f"{i:016x}", boot=1, seq=1, ts=1, vrms=1, irms=1, p=1, s=1, pf=1, freq=60,
                        energy_mwh=1) for i in range(MAX_METERS + 3)]
    for i in range(0, len(readings), mqtt.MAX_BATCH):
        m.handle(mqtt.readings_topic(SITE, GW), batch(*readings[i:i + mqtt.MAX_BATCH]), 0.0)
    assert len(m.meters) == MAX_METERS and m.stats.rejected == {"too_many_meters": 3}


def test_older_device_info_of_a_former_gateway_does_not_move_the_meter_back() -> None:
    m = mirror()

    def info(gw: str, seen_at: int, firmware: str) -> None:
        m.handle(mqtt.device_topic(SITE, gw, DEV), mqtt.json_encoder.encode(
            DeviceInfo(device=DEV, firmware=firmware, hw_rev=1, boot=1, report_period_ms=1000, seen_at=seen_at)), 0.0)

    info("gw-new", 2000, "2.0")
    info("gw-old", 1000, "1.0")  # the broker replays retained messages in any order
    assert (m.meters[DEV].gateway, m.meters[DEV].firmware) == ("gw-new", "2.0")


def test_home_assistant_birth_republishes_everything() -> None:
    m = mirror()
    m.handle(mqtt.readings_topic(SITE, GW), batch(reading(1, 1000, 10)), 0.0)
    assert m.handle(ha.birth_topic(ROOT, SITE), b"offline", 1.0) == []
    out = m.handle(ha.birth_topic(ROOT, SITE), b"online", 1.0)
    assert sum(o.topic.endswith("/config") for o in out) == 5 and out[-1].topic == ha.state_topic(SITE, DEV)
