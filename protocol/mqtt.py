"""MQTT contract between gateways and the backend (docs/mqtt.md).

Light on purpose: msgspec only, no paho or pyserial, so the gateway, the backend and the simulator import it
freely. Every payload carries ``v`` (schema version); fields added later get defaults, so old and new peers keep
decoding each other (msgspec's schema-evolution rules). Encoders and decoders are built once, here.

End-to-end receipts. A broker's PUBACK only says the broker took a message: Mosquitto forgets what it PUBACKed
since its last autosave when it crashes, and a member of the backend's share group that is not a backend (or an
ACL that hides the topic from the backend) makes a PUBACKed message vanish. So a gateway names every uplink batch
(:attr:`ReadingBatch.batch_id`), and the backend, once the batch's readings and their dirty marks are in InfluxDB
(or the batch was dead-lettered), names it back in a :class:`Receipt` on ``.../down/receipts``; only then does
the gateway forget the readings. A batch without an id (an older gateway) gets no receipt; a gateway that never
sees a receipt (an older backend) keeps its PUBACK-based behaviour.

Why an id per *send*, not per reading range: the id is what the receipt deletes by, so it must name exactly the
readings of the message the backend stored. The gateway makes a fresh id for every transmission (a random token
per gateway run plus a counter: never reused, not even after a restart or a replaced queue file) and tags the
readings with the id of their latest transmission. A receipt then deletes only readings that travelled in the
message it names — a message the backend has stored — so neither a re-send (new id) nor a late receipt of an
earlier send (readings since re-tagged are left alone and confirmed by their newer id) can delete a reading that
is not durable. The backend treats the id as opaque and never parses it.
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
MAX_RECEIPT_IDS: Final = 1000
"""Batch ids per Receipt at most (about 20 KiB); a sender splits longer lists."""
BATCH_ID_PATTERN: Final = r"^[A-Za-z0-9_.-]{0,64}\Z"
"""A batch id: opaque to the backend, short, safe in logs and JSON; empty = no receipt wanted."""

U32 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=32503680000000)]  # up to year 3000
Finite = Annotated[float, msgspec.Meta(ge=-1e9, le=1e9)]  # also rejects NaN and infinities
BatchId = Annotated[str, msgspec.Meta(pattern=BATCH_ID_PATTERN)]


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
    """Cumulative imported active energy register, mWh (exact)."""
    flags: Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)] = 0
    energy_export_mwh: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] = 0
    """Cumulative exported active energy register, mWh (exact). 0 from a meter without one (a READING, not a
    READING2) and in an older gateway's payload, which lacks the field: both mean "import only". An older
    backend ignores the field (unknown fields are skipped), so a new gateway's payload still decodes there."""


class ReadingBatch(msgspec.Struct, frozen=True):
    """Uplink ``.../up/readings``: readings from one gateway, oldest first per device."""

    site: Ident
    gateway: Ident
    readings: Annotated[list[Reading], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    sent_at: EpochMs = 0
    v: int = SCHEMA_VERSION
    batch_id: BatchId = ""
    """The gateway's id of this transmission, echoed in a :class:`Receipt`; empty (older gateways) = no receipt."""


class Receipt(msgspec.Struct, frozen=True):
    """Downlink ``.../down/receipts``: uplink batches of this gateway the backend has finished with.

    ``stored``: every reading of the batch is in InfluxDB with its dirty marks, except readings refused one by
    one (e.g. a future timestamp), which were dead-lettered. ``dead_lettered``: the whole batch was refused and
    published to the dead-letter topic; sending it again would not change that. Either way the gateway may forget
    the batch's readings. Ids are those of :attr:`ReadingBatch.batch_id`; a receipt may name batches of several
    InfluxDB writes and may arrive more than once (QoS 1).
    """

    stored: Annotated[list[BatchId], msgspec.Meta(max_length=MAX_RECEIPT_IDS)] = msgspec.field(default_factory=list)
    dead_lettered: Annotated[list[BatchId], msgspec.Meta(max_length=MAX_RECEIPT_IDS)] = msgspec.field(
        default_factory=list
    )
    ts: EpochMs = 0
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
    unconfirmed: int = 0
    """Readings the broker PUBACKed that still wait for the backend's receipt (or for the end of the replay
    window when ``receipts`` is false)."""
    receipts: bool = False
    """True once this gateway has seen a receipt: readings are kept until the backend confirms them. False:
    the backend sends none (an older backend) or receipts are off, and the gateway relies on its replay window."""


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


def receipts_topic(site: str, gateway: str) -> str:
    return f"{ROOT}/{site}/{gateway}/down/receipts"


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
receipt_decoder: Final = msgspec.json.Decoder(Receipt)


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
        energy_export_mwh=frame.energy_export_mwh if isinstance(frame, frames.Reading2) else 0,
    )
