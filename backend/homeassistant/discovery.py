"""Home Assistant MQTT discovery configs for one meter (sans-IO): which sensors, with which classes and units.

Home Assistant's Energy dashboard takes a sensor only with ``device_class: energy``, ``state_class: total`` or
``total_increasing`` and an energy unit (Wh, kWh, ...), and its statistics take power, voltage and current only
with their own classes and units (W, V, A) and ``state_class: measurement``. Each sensor below fixes those
together, so no combination Home Assistant would reject (or silently keep out of Energy) can be built.
Why ``total_increasing`` for the registers: they only grow, and a drop is what Home Assistant calls a new meter
cycle, which is exactly what a register that restarted from zero is (docs/homeassistant.md, "Resets").
Power factor goes out in %: Home Assistant accepts ``%`` or no unit for it, and ``%`` works on older versions.

One config per sensor (``<prefix>/sensor/cds_<device>/<key>/config``), all sharing one device block, so Home
Assistant shows one device per meter. Availability is the conjunction (``availability_mode: all``) of three
retained topics: the bridge's own status (its last will says offline), the meter's gateway status (the gateway's
last will says ``online: false``) and the meter's DeviceInfo (``link`` down when the serial link is lost). The
last two are the gateway's JSON payloads, read through a ``value_template`` mapped to online/offline.

Names shown in Home Assistant are pt-BR, like every user-facing text of CDS; a household renames them there.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

import msgspec

from protocol import homeassistant as ha
from protocol import mqtt

DeviceClass = Literal["power", "voltage", "current", "power_factor", "energy"]
StateClass = Literal["measurement", "total_increasing"]

MANUFACTURER: Final = "CDS"
MODEL: Final = "AICSS"
ORIGIN: Final = "CDS"


class Sensor(NamedTuple):
    """One sensor of a meter: ``key`` is its object id and the field of the state payload it shows."""

    key: str
    name: str
    device_class: DeviceClass
    state_class: StateClass
    unit: str
    precision: int


POWER: Final = Sensor("power", "Potência", "power", "measurement", "W", 1)
VOLTAGE: Final = Sensor("voltage", "Tensão", "voltage", "measurement", "V", 1)
CURRENT: Final = Sensor("current", "Corrente", "current", "measurement", "A", 2)
POWER_FACTOR: Final = Sensor("power_factor", "Fator de potência", "power_factor", "measurement", "%", 0)
ENERGY: Final = Sensor("energy", "Energia consumida", "energy", "total_increasing", "kWh", 3)
ENERGY_EXPORT: Final = Sensor("energy_export", "Energia injetada", "energy", "total_increasing", "kWh", 3)
"""Only for a meter that has exported something: a meter without an export register reports 0 for ever, and a
sensor stuck at 0 would only clutter the Energy dashboard's list of return sources."""


class Availability(msgspec.Struct, frozen=True, omit_defaults=True):
    topic: str
    payload_available: str
    payload_not_available: str
    value_template: str = ""


class DeviceBlock(msgspec.Struct, frozen=True, omit_defaults=True):
    """Home Assistant's device registry entry: one per meter, shared by its sensors."""

    identifiers: list[str]
    name: str
    manufacturer: str
    model: str
    serial_number: str
    sw_version: str = ""
    hw_version: str = ""


class Origin(msgspec.Struct, frozen=True):
    """Who published the config; Home Assistant names it in its logs."""

    name: str


class SensorConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    """The payload of one discovery topic, with Home Assistant's own key names (no abbreviations)."""

    name: str
    unique_id: str
    state_topic: str
    value_template: str
    device_class: DeviceClass
    state_class: StateClass
    unit_of_measurement: str
    suggested_display_precision: int
    availability: list[Availability]
    availability_mode: Literal["all"]
    device: DeviceBlock
    origin: Origin


class MeterInfo(NamedTuple):
    """What a meter's configs depend on; a change of any field means publishing them again."""

    device: str
    gateway: str
    firmware: str
    hw_rev: int
    exports: bool
    """True once the meter has reported exported energy (see :data:`ENERGY_EXPORT`)."""


_encoder: Final = msgspec.json.Encoder()
_GATEWAY_ONLINE: Final = f"{{{{ '{ha.ONLINE}' if value_json.online else '{ha.OFFLINE}' }}}}"
_LINK_UP: Final = f"{{{{ '{ha.ONLINE}' if value_json.link == 'up' else '{ha.OFFLINE}' }}}}"


def sensors(meter: MeterInfo) -> list[Sensor]:
    """The sensors a meter has in Home Assistant."""
    out = [POWER, VOLTAGE, CURRENT, POWER_FACTOR, ENERGY]
    return [*out, ENERGY_EXPORT] if meter.exports else out


def availability(site: str, meter: MeterInfo) -> list[Availability]:
    return [
        Availability(ha.bridge_status_topic(site), ha.ONLINE, ha.OFFLINE),
        Availability(mqtt.status_topic(site, meter.gateway), ha.ONLINE, ha.OFFLINE, _GATEWAY_ONLINE),
        Availability(mqtt.device_topic(site, meter.gateway, meter.device), ha.ONLINE, ha.OFFLINE, _LINK_UP),
    ]


def device_block(meter: MeterInfo) -> DeviceBlock:
    return DeviceBlock(
        identifiers=[f"cds_{meter.device}"], name=f"Medidor {meter.device}", manufacturer=MANUFACTURER, model=MODEL,
        serial_number=meter.device, sw_version=meter.firmware,
        hw_version=str(meter.hw_rev) if meter.firmware else "",  # hw_rev is only known from a DeviceInfo
    )


def sensor_config(site: str, meter: MeterInfo, sensor: Sensor) -> SensorConfig:
    return SensorConfig(
        name=sensor.name, unique_id=f"cds_{meter.device}_{sensor.key}", state_topic=ha.state_topic(site, meter.device),
        value_template=f"{{{{ value_json.{sensor.key} }}}}", device_class=sensor.device_class,
        state_class=sensor.state_class, unit_of_measurement=sensor.unit, suggested_display_precision=sensor.precision,
        availability=availability(site, meter), availability_mode="all", device=device_block(meter),
        origin=Origin(ORIGIN),
    )


def configs(root: str, site: str, meter: MeterInfo) -> list[tuple[str, bytes]]:
    """``(topic, payload)`` of every discovery config of ``meter``, to be published retained at QoS 1."""
    return [(ha.config_topic(root, site, meter.device, s.key), _encoder.encode(sensor_config(site, meter, s)))
            for s in sensors(meter)]
