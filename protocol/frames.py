"""Sans-IO codec for the AICSS serial protocol (docs/protocol.md).

Bytes in, typed frames out; typed frames in, bytes out. No serial port, socket or event loop is touched here, so
the gateway, the simulator, the monitor tool and the tests all share exactly this code.

Wire layout (before COBS; the COBS-encoded frame is followed by one 0x00 delimiter)::

    +---------+------+----------------------+--------+
    | version | kind | payload (per kind)   | crc16  |
    |  u8 = 1 |  u8  | 0..60 bytes, LE      | u16 LE |
    +---------+------+----------------------+--------+

CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over version, kind and payload; ``binascii.crc_hqx`` computes
exactly that in C, and the ``cobs`` package does COBS in C, which is what makes 200k+ frames/s possible.
"""

from __future__ import annotations

import binascii
import struct
from typing import ClassVar, Final, TypeAlias

import msgspec
from cobs import cobs

VERSION: Final = 1
MAX_FRAME: Final = 64
MAX_ENCODED: Final = MAX_FRAME + 1
MAX_LOG_TEXT: Final = 48
DELIMITER: Final = b"\x00"

# READING flag bits
FLAG_RESENT: Final = 1 << 0
FLAG_V_CLIP: Final = 1 << 1
FLAG_I_CLIP: Final = 1 << 2
FLAG_UNCALIBRATED: Final = 1 << 3
FLAG_NO_SIGNAL: Final = 1 << 4
FLAG_FIRST_AFTER_BOOT: Final = 1 << 5

# CONFIG "keep current value" markers
KEEP: Final = 0
KEEP_PHASE: Final = -32768

# CONFIG_RESULT status
CONFIG_APPLIED: Final = 0
CONFIG_REJECTED: Final = 1
CONFIG_STORAGE_ERROR: Final = 2


class FrameError(ValueError):
    """A malformed frame. ``reason`` is the short counter name from docs/protocol.md."""

    reason: ClassVar[str] = "frame"

    def __init__(self, message: str, raw: bytes = b"") -> None:
        super().__init__(message)
        self.raw = raw


class CobsError(FrameError):
    reason = "cobs"


class ShortFrameError(FrameError):
    reason = "short"


class CrcError(FrameError):
    reason = "crc"


class VersionError(FrameError):
    reason = "version"


class KindError(FrameError):
    reason = "kind"


class LengthError(FrameError):
    reason = "length"


class OversizeError(FrameError):
    reason = "oversize"


class FieldValueError(FrameError):
    reason = "value"


class Hello(msgspec.Struct, frozen=True):
    """Meter identity, sent after every reset and in answer to SYNC."""

    kind: ClassVar[int] = 0x01
    device_id: bytes
    fw_major: int
    fw_minor: int
    fw_patch: int
    hw_rev: int
    boot_count: int
    report_period_ms: int

    @property
    def device(self) -> str:
        """The device id as 16 lowercase hex digits, the form used on MQTT and in InfluxDB."""
        return self.device_id.hex()

    @property
    def firmware(self) -> str:
        return f"{self.fw_major}.{self.fw_minor}.{self.fw_patch}"


class Reading(msgspec.Struct, frozen=True):
    """One measuring window. Fixed-point fields; the properties give SI units."""

    kind: ClassVar[int] = 0x02
    seq: int
    uptime_ms: int
    vrms_mv: int
    irms_ma: int
    p_dw: int
    s_dva: int
    pf_milli: int
    freq_mhz: int
    energy_mwh: int
    flags: int = 0

    @property
    def vrms(self) -> float:
        return self.vrms_mv / 1000

    @property
    def irms(self) -> float:
        return self.irms_ma / 1000

    @property
    def power_w(self) -> float:
        return self.p_dw / 10

    @property
    def apparent_va(self) -> float:
        return self.s_dva / 10

    @property
    def pf(self) -> float:
        return self.pf_milli / 1000

    @property
    def freq_hz(self) -> float:
        return self.freq_mhz / 1000


class Reading2(Reading, frozen=True):
    """READING2: a READING from a bidirectional meter, with the exported-energy register appended.

    A subclass, so everything that handles readings (queues, ACKs, timestamps) takes both layouts unchanged;
    ``energy_mwh`` keeps meaning the imported register. A plain :class:`Reading` comes from a meter without an
    export register: its export is 0 by definition (docs/protocol.md, READING2).
    """

    kind: ClassVar[int] = 0x06
    energy_export_mwh: int = 0


class Status(msgspec.Struct, frozen=True):
    """The meter's queue and error counters."""

    kind: ClassVar[int] = 0x03
    oldest_seq: int
    next_seq: int
    queued: int
    dropped: int
    rx_errors: int
    sample_rate_hz: int


class Log(msgspec.Struct, frozen=True):
    kind: ClassVar[int] = 0x04
    level: int
    text: str


class ConfigResult(msgspec.Struct, frozen=True):
    kind: ClassVar[int] = 0x05
    request_id: int
    status: int
    report_period_ms: int
    v_gain: int
    i_gain: int
    phase_cdeg: int


class Ack(msgspec.Struct, frozen=True):
    """Cumulative acknowledgement: every reading of ``boot_count`` with seq <= ``seq`` is durable."""

    kind: ClassVar[int] = 0x10
    boot_count: int
    seq: int


class Config(msgspec.Struct, frozen=True):
    """Report period and calibration; 0 (phase: -32768) keeps the value in force."""

    kind: ClassVar[int] = 0x11
    request_id: int
    report_period_ms: int = KEEP
    v_gain: int = KEEP
    i_gain: int = KEEP
    phase_cdeg: int = KEEP_PHASE


class Sync(msgspec.Struct, frozen=True):
    """Ask the meter for HELLO, STATUS and every unacknowledged reading."""

    kind: ClassVar[int] = 0x12


Frame: TypeAlias = Hello | Reading | Reading2 | Status | Log | ConfigResult | Ack | Config | Sync

# Fixed payload layouts, little-endian. LOG is the one variable-length kind and is handled by hand.
_LAYOUTS: Final[dict[int, tuple[type[Frame], struct.Struct]]] = {
    Hello.kind: (Hello, struct.Struct("<8sBBBBII")),
    Reading.kind: (Reading, struct.Struct("<IIIIiIhHQH")),
    Reading2.kind: (Reading2, struct.Struct("<IIIIiIhHQHQ")),
    Status.kind: (Status, struct.Struct("<IIHIHH")),
    ConfigResult.kind: (ConfigResult, struct.Struct("<HBIIIh")),
    Ack.kind: (Ack, struct.Struct("<II")),
    Config.kind: (Config, struct.Struct("<HIIIh")),
    Sync.kind: (Sync, struct.Struct("<")),
}
_LOG_KIND: Final = Log.kind
_READING_UNPACK = _LAYOUTS[Reading.kind][1].unpack_from
_READING_LEN: Final = 2 + _LAYOUTS[Reading.kind][1].size + 2
_READING2_UNPACK = _LAYOUTS[Reading2.kind][1].unpack_from
_READING2_LEN: Final = 2 + _LAYOUTS[Reading2.kind][1].size + 2


def _payload(frame: Frame) -> bytes:
    if isinstance(frame, Log):
        text = frame.text.encode("utf-8")
        if len(text) > MAX_LOG_TEXT or not 0 <= frame.level <= 4:
            raise FieldValueError(f"LOG text over {MAX_LOG_TEXT} bytes or level out of range")
        return bytes((frame.level,)) + text
    _, layout = _LAYOUTS[frame.kind]
    values = [getattr(frame, name) for name in frame.__struct_fields__]
    try:
        return layout.pack(*values)
    except struct.error as exc:
        raise FieldValueError(f"{type(frame).__name__}: {exc}") from exc


def encode_raw(frame: Frame) -> bytes:
    """The decoded frame (version, kind, payload, CRC) before COBS — what the CRC and the vectors describe."""
    body = bytes((VERSION, frame.kind)) + _payload(frame)
    return body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "little")


def encode(frame: Frame) -> bytes:
    """Encode one frame for the wire: COBS, then the 0x00 delimiter."""
    encoded: bytes = cobs.encode(encode_raw(frame))
    return encoded + DELIMITER


def decode_raw(raw: bytes) -> Frame:
    """Decode one frame already stripped of COBS. Raises a :class:`FrameError` subclass when malformed."""
    n = len(raw)
    if n < 4:
        raise ShortFrameError(f"frame of {n} bytes is shorter than 4", raw)
    if binascii.crc_hqx(raw[:-2], 0xFFFF) != raw[-2] | (raw[-1] << 8):
        raise CrcError("CRC mismatch", raw)
    if raw[0] != VERSION:
        raise VersionError(f"protocol version {raw[0]} is not {VERSION}", raw)
    kind = raw[1]
    if kind == Reading.kind and n == _READING_LEN:  # the hot path, kept short
        return Reading(*_READING_UNPACK(raw, 2))
    if kind == Reading2.kind and n == _READING2_LEN:
        return Reading2(*_READING2_UNPACK(raw, 2))
    if kind == _LOG_KIND:
        if not 1 <= n - 4 <= 1 + MAX_LOG_TEXT:
            raise LengthError(f"LOG payload of {n - 4} bytes", raw)
        level = raw[2]
        if level > 4:
            raise FieldValueError(f"LOG level {level} out of range", raw)
        try:
            text = raw[3:-2].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FieldValueError("LOG text is not UTF-8", raw) from exc
        return Log(level, text)
    entry = _LAYOUTS.get(kind)
    if entry is None:
        raise KindError(f"unknown message kind 0x{kind:02x}", raw)
    cls, layout = entry
    if n - 4 != layout.size:
        raise LengthError(f"kind 0x{kind:02x} needs {layout.size} payload bytes, got {n - 4}", raw)
    return cls(*layout.unpack_from(raw, 2))


def decode(wire: bytes) -> Frame:
    """Decode one COBS-encoded frame, with or without its trailing 0x00 delimiter."""
    if wire.endswith(DELIMITER):
        wire = wire[:-1]
    if len(wire) > MAX_ENCODED:
        raise OversizeError(f"{len(wire)} encoded bytes exceed {MAX_ENCODED}", wire)
    try:
        raw: bytes = cobs.decode(wire)
    except cobs.DecodeError as exc:
        raise CobsError(f"invalid COBS: {exc}", wire) from exc
    return decode_raw(raw)


class Decoder:
    """Stream decoder: feed it bytes as they arrive, get back frames and errors in wire order.

    Errors are returned as values rather than raised so that one corrupt frame never hides the good frames
    that follow it in the same chunk. At most ``MAX_ENCODED`` bytes are ever buffered.
    """

    __slots__ = ("_buf", "_discarding")

    def __init__(self) -> None:
        self._buf = b""
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes held while waiting for a delimiter."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        """Add bytes from the wire; return every complete frame (or its error), oldest first."""
        out: list[Frame | FrameError] = []
        if not data:
            return out
        parts = (self._buf + data).split(DELIMITER) if self._buf else data.split(DELIMITER)
        tail = parts.pop()
        for part in parts:
            if self._discarding:
                # the end of an oversize run: its error was already reported
                self._discarding = False
                continue
            if not part:
                continue
            try:
                out.append(decode(part))
            except FrameError as exc:
                out.append(exc)
        if self._discarding:
            tail = b""
        elif len(tail) > MAX_ENCODED:
            out.append(OversizeError(f"more than {MAX_ENCODED} bytes without a delimiter", tail[:MAX_ENCODED]))
            self._discarding = True
            tail = b""
        self._buf = tail
        return out

    def reset(self) -> None:
        """Forget buffered bytes, e.g. after the port was reopened."""
        self._buf = b""
        self._discarding = False
