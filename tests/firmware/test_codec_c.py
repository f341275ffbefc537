"""The C frame codec (firmware/lib/frames) against the shared vectors in tests/vectors/frames.json, byte for byte,
and against the Python codec on frames the vectors do not list."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import frames

pytestmark = pytest.mark.firmware

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "frames.json").read_text())
CLASSES: dict[int, type[Any]] = {
    cls.kind: cls
    for cls in (
        frames.Hello,
        frames.Reading,
        frames.Reading2,
        frames.Status,
        frames.Log,
        frames.ConfigResult,
        frames.Ack,
        frames.Config,
        frames.Sync,
    )
}
BYTES_FIELDS = {"device_id", "text"}
SIGNED = {"p_dw", "pf_milli", "phase_cdeg"}
STATUS_NAMES = ["none", "ok", "cobs", "short", "crc", "version", "kind", "length", "oversize", "value"]
MASK64 = (1 << 64) - 1


def _numeric(cls: type[Any]) -> list[str]:
    return [n for n in cls.__struct_fields__ if n not in BYTES_FIELDS]


def _buf(data: bytes) -> Any:
    return (ctypes.c_uint8 * max(1, len(data))).from_buffer_copy(data or b"\x00")


def c_encode(cds: ctypes.CDLL, kind: int, fields: dict[str, Any]) -> tuple[bytes, bytes]:
    cls = CLASSES[kind]
    nums = (ctypes.c_uint64 * 16)(*[int(fields[n]) & MASK64 for n in _numeric(cls)])
    blob = b""
    if "device_id" in fields:
        blob = bytes.fromhex(fields["device_id"])
    elif "text" in fields:
        blob = fields["text"].encode()
    wire = (ctypes.c_uint8 * 80)()
    raw = (ctypes.c_uint8 * 80)()
    raw_len = ctypes.c_uint32()
    n = cds.cds_encode(kind, nums, _buf(blob), len(blob), wire, raw, ctypes.byref(raw_len))
    return bytes(wire[:n]), bytes(raw[: raw_len.value])


def c_decode(cds: ctypes.CDLL, wire: bytes) -> tuple[str, dict[str, Any]]:
    """Decode one frame (delimiter stripped); returns (status name, fields)."""
    kind = ctypes.c_uint8()
    nums = (ctypes.c_uint64 * 16)()
    blob = (ctypes.c_uint8 * 64)()
    nblob = ctypes.c_uint32()
    st = cds.cds_decode_wire(_buf(wire), len(wire), ctypes.byref(kind), nums, blob, ctypes.byref(nblob))
    if STATUS_NAMES[st] != "ok":
        return STATUS_NAMES[st], {}
    cls = CLASSES[kind.value]
    out: dict[str, Any] = {}
    for k, name in enumerate(_numeric(cls)):
        v = nums[k]
        out[name] = v - (1 << 64) if name in SIGNED and v >= 1 << 63 else v
    if "device_id" in cls.__struct_fields__:
        out["device_id"] = bytes(blob[: nblob.value]).hex()
    if "text" in cls.__struct_fields__:
        out["text"] = bytes(blob[: nblob.value]).decode()
    out["kind"] = kind.value
    return "ok", out


def test_crc_check_value(cds: ctypes.CDLL) -> None:
    data = bytes.fromhex(VECTORS["crc"]["input"])
    assert cds.cds_crc16(_buf(data), len(data)) == VECTORS["crc"]["crc"]


@pytest.mark.parametrize("vec", VECTORS["valid"], ids=lambda v: v["id"])
def test_valid_vector_encodes_byte_for_byte(cds: ctypes.CDLL, vec: dict[str, Any]) -> None:
    wire, raw = c_encode(cds, vec["kind_code"], vec["fields"])
    assert raw.hex() == vec["raw"]
    assert wire.hex() == vec["wire"]


@pytest.mark.parametrize("vec", VECTORS["valid"], ids=lambda v: v["id"])
def test_valid_vector_decodes_to_its_fields(cds: ctypes.CDLL, vec: dict[str, Any]) -> None:
    status, fields = c_decode(cds, bytes.fromhex(vec["wire"])[:-1])
    assert status == "ok"
    assert fields.pop("kind") == vec["kind_code"]
    assert fields == vec["fields"]


@pytest.mark.parametrize("vec", VECTORS["malformed"], ids=lambda v: v["id"])
def test_malformed_vector_rejected_with_reason(cds: ctypes.CDLL, vec: dict[str, Any]) -> None:
    wire = bytes.fromhex(vec["wire"])
    # one-shot decode of the bytes before the delimiter ...
    status, _ = c_decode(cds, wire[:-1])
    assert status == vec["error"]
    # ... and the streaming decoder, byte by byte, reports exactly that one error
    assert c_stream(cds, wire)[0] == [vec["error"]]


def c_stream(cds: ctypes.CDLL, data: bytes) -> tuple[list[str], int]:
    events = (ctypes.c_int32 * 64)()
    pending = ctypes.c_uint32()
    n = cds.cds_stream(_buf(data), len(data), events, 64, ctypes.byref(pending))
    out = []
    for e in events[:n]:
        st = STATUS_NAMES[e & 0xFF]
        out.append(CLASSES[e >> 8].__name__.lower() if st == "ok" else st)
    return out, pending.value


@pytest.mark.parametrize("vec", VECTORS["streams"], ids=lambda v: v["id"])
def test_stream_vector(cds: ctypes.CDLL, vec: dict[str, Any]) -> None:
    events, max_pending = c_stream(cds, bytes.fromhex(vec["wire"]))
    assert events == vec["expect"]
    assert max_pending <= frames.MAX_ENCODED


def test_decoder_never_buffers_more_than_max_encoded(cds: ctypes.CDLL) -> None:
    events, max_pending = c_stream(cds, b"\x07" * 1000 + b"\x00" + frames.encode(frames.Sync()))
    assert events == ["oversize", "sync"]
    assert max_pending == frames.MAX_ENCODED


def test_every_strict_prefix_is_incomplete(cds: ctypes.CDLL) -> None:
    wire = frames.encode(frames.Reading(1, 2, 3, 4, -5, 6, -7, 8, 9, 10))
    for k in range(len(wire) - 1):
        assert c_stream(cds, wire[:k])[0] == []
    assert c_stream(cds, wire)[0] == ["reading"]


@pytest.mark.parametrize(
    "frame",
    [
        frames.Reading(123456, 987654, 127001, 15000, -19050, 19051, -999, 59999, 2**40 + 17, 0x3F),
        frames.Status(1, 2, 3, 4, 5, 6),
        frames.Log(3, "EEPROM write failed: energy not persisted"),
        frames.Log(1, "ação"),
        frames.Config(1, 250, 10_000_000, 1, -1000),
        frames.ConfigResult(2, 2, 3_600_000, 5, 6, 1000),
        frames.Ack(0xFFFFFFFF, 0x80000000),
    ],
    ids=lambda f: type(f).__name__,
)
def test_c_and_python_codecs_agree(cds: ctypes.CDLL, frame: frames.Frame) -> None:
    fields = {n: getattr(frame, n) for n in frame.__struct_fields__}
    if isinstance(frame, frames.Hello):
        fields["device_id"] = frame.device_id.hex()
    wire, _ = c_encode(cds, frame.kind, fields)
    assert wire == frames.encode(frame)
    status, decoded = c_decode(cds, wire[:-1])
    assert status == "ok"
    decoded.pop("kind")
    assert decoded == fields


def test_log_with_invalid_level_is_not_encoded(cds: ctypes.CDLL) -> None:
    wire, _ = c_encode(cds, frames.Log.kind, {"level": 5, "text": "x"})
    assert wire == b""


def _python_events(data: bytes) -> list[str]:
    out = []
    for f in frames.Decoder().feed(data):
        out.append(f.reason if isinstance(f, frames.FrameError) else type(f).__name__.lower())
    return out


@settings(derandomize=True, max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.sampled_from([frames.encode(f) for f in (frames.Sync(), frames.Ack(1, 2), frames.Log(1, "ok"))]),
        ),
        max_size=6,
    ).map(b"".join)
)
def test_c_stream_decoder_agrees_with_python_on_any_bytes(cds: ctypes.CDLL, data: bytes) -> None:
    events, max_pending = c_stream(cds, data)
    assert events == _python_events(data)
    assert max_pending <= frames.MAX_ENCODED
