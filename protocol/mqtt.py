"""MQTT contract between gateways and the backend (docs/mqtt.md).

Light on purpose: msgspec only, no paho or pyserial, so the gateway, the backend and the simulator import it
freely. Every payload carries ``v`` (schema version); fields added later get defaults, so old and new peers keep
decoding each other (msgspec's schema-evolution rules). Encoders and decoders are built once, here.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

from protocol import frames
from protocol.ids import DeviceId, Ident

SCHEMA_VERSION: Final = 1
ROOT: Final = "cds/v1"
MAX_BATCH: Final = 500
"""Readings per uplink message at most; keeps a message well under 128 KiB."""

U32 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=32503680000000)]  # up to year 3000
Finite = Annotated[float, msgspec.Meta(ge=-1e9, le=1e9)]  # also rejects NaN and infinities


class Reading(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One meter reading on MQTT, in SI units. ``(device, boot, seq)`` identifies it for life."""

    device: DeviceId
    boot: U32
    seq: U32
    ts: EpochMs
    """Measured time, milliseconds since the Unix epoch (UTC)."""
    vrms: Finite
    """Volts RMS."""
    irms: Finite
    """Amperes RMS."""
    p: Finite
    """Active power, W (negative = export)."""
    s: Finite
    """Apparent power, VA."""
    pf: Annotated[float, msgspec.Meta(ge=-1.0, le=1.0)]
    freq: Annotated[float, msgspec.Meta(ge=0.0, le=1000.0)]
    """Line frequency, Hz (0 = no signal)."""
    energy_mwh: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    """Cumulative active energy register, mWh (exact)."""
    flags: Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)] = 0


class ReadingBatch(msgspec.Struct, frozen=True):
    """Uplink ``.../up/readings``: readings from one gateway, oldest first per device."""

    site: Ident
    gateway: Ident
    readings: Annotated[list[Reading], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    sent_at: EpochMs = 0
    v: int = SCHEMA_VERSION


class DeviceInfo(msgspec.Struct, frozen=True):
    """Retained ``.../devices/{device}``: what the meter said in its last HELLO and how its link is."""

    device: DeviceId
    firmware: str
    hw_rev: int
    boot: U32
    report_period_ms: U32
    link: Literal["up", "down"] = "up"
    port: str = ""
    seen_at: EpochMs = 0
    v: int = SCHEMA_VERSION


class GatewayStatus(msgspec.Struct, frozen=True):
    """Retained ``.../status``; the last will publishes ``online=False``."""

    online: bool
    gateway: Ident = "unknown"
    site: Ident = "unknown"
    version: str = ""
    queued: int = 0
    oldest_queued_ms: int = 0
    ts: EpochMs = 0
    v: int = SCHEMA_VERSION


class ConfigRequest(msgspec.Struct, frozen=True):
    """Downlink ``.../down/config/{device}``: report period and calibration for one meter (None = keep)."""

    request_id: Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]
    report_period_ms: Annotated[int, msgspec.Meta(ge=250, le=3_600_000)] | None = None
    v_gain: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None
    i_gain: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None
    phase_cdeg: Annotated[int, msgspec.Meta(ge=-1000, le=1000)] | None = None
    v: int = SCHEMA_VERSION


class ConfigResult(msgspec.Struct, frozen=True):
    """Uplink ``.../up/config-result``: what the meter answered (or why the gateway could not deliver)."""

    device: DeviceId
    request_id: int
    status: Literal["applied", "rejected", "storage_error", "undeliverable", "timeout"]
    report_period_ms: int = 0
    v_gain: int = 0
    i_gain: int = 0
    phase_cdeg: int = 0
    detail: str = ""
    ts: EpochMs = 0
    v: int = SCHEMA_VERSION


# --- topics -------------------------------------------------------------------------------------------------


def readings_topic(site: str, gateway: str) -> str:
    return f"{ROOT}/{site}/{gateway}/up/readings"


def status_topic(site: str, gateway: str) -> str:
    return f"{ROOT}/{site}/{gateway}/status"


def device_topic(site: str, gateway: str, device: str) -> str:
    return f"{ROOT}/{site}/{gateway}/devices/{device}"


def config_topic(site: str, gateway: str, device: str) -> str:
    return f"{ROOT}/{site}/{gateway}/down/config/{device}"


def config_result_topic(site: str, gateway: str) -> str:
    return f"{ROOT}/{site}/{gateway}/up/config-result"


READINGS_FILTER: Final = f"{ROOT}/+/+/up/readings"
CONFIG_RESULT_FILTER: Final = f"{ROOT}/+/+/up/config-result"
STATUS_FILTER: Final = f"{ROOT}/+/+/status"
DEVICES_FILTER: Final = f"{ROOT}/+/+/devices/+"
DEAD_LETTER_ROOT: Final = f"{ROOT}/_deadletter"


def split_topic(topic: str) -> tuple[str, str, str]:
    """``cds/v1/{site}/{gateway}/{rest}`` -> (site, gateway, rest); ValueError when it is not under the root."""
    parts = topic.split("/", 4)
    if len(parts) < 5 or f"{parts[0]}/{parts[1]}" != ROOT:
        raise ValueError(f"topic {topic!r} is not under {ROOT}/<site>/<gateway>/")
    return parts[2], parts[3], parts[4]


# --- codecs, built once ---------------------------------------------------------------------------------------

json_encoder: Final = msgspec.json.Encoder()
batch_decoder: Final = msgspec.json.Decoder(ReadingBatch)
status_decoder: Final = msgspec.json.Decoder(GatewayStatus)
device_decoder: Final = msgspec.json.Decoder(DeviceInfo)
config_request_decoder: Final = msgspec.json.Decoder(ConfigRequest)
config_result_decoder: Final = msgspec.json.Decoder(ConfigResult)


def reading_from_frame(device: str, boot: int, ts_ms: int, frame: frames.Reading) -> Reading:
    """The MQTT form of a decoded READING frame, timestamped by the gateway."""
    return Reading(
        device=device,
        boot=boot,
        seq=frame.seq,
        ts=ts_ms,
        vrms=frame.vrms_mv / 1000,
        irms=frame.irms_ma / 1000,
        p=frame.p_dw / 10,
        s=frame.s_dva / 10,
        pf=frame.pf_milli / 1000,
        freq=frame.freq_mhz / 1000,
        energy_mwh=frame.energy_mwh,
        flags=frame.flags,
    )
