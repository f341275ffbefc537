"""The Python frame codec against docs/protocol.md and the shared vectors (h11 / mqtt5 style)."""

from __future__ import annotations

import binascii
import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import frames as f

VECTORS = json.loads((Path(__file__).parent / "vectors" / "frames.json").read_text())
VALID = VECTORS["valid"]
MALFORMED = VECTORS["malformed"]
STREAMS = VECTORS["streams"]
KIND_NAMES = {cls.__name__.lower(): cls for cls in (f.Hello, f.Reading, f.Reading2, f.Status, f.Log, f.ConfigResult,
                                                     f.Ack, f.Config, f.Sync)}


def frame_of(case: dict) -> f.Frame:
    cls = KIND_NAMES[case["kind"]]
    fields = dict(case["fields"])
    if cls is f.Hello:
        fields["device_id"] = bytes.fromhex(fields["device_id"])
    return cls(**fields)


def name_of(item: f.Frame | f.FrameError) -> str:
    return item.reason if isinstance(item, f.FrameError) else type(item).__name__.lower()


def test_crc_is_ccitt_false() -> None:
    assert binascii.crc_hqx(bytes.fromhex(VECTORS["crc"]["input"]), 0xFFFF) == VECTORS["crc"]["crc"] == 0x29B1


def test_vectors_cover_every_kind() -> None:
    assert {c["kind"] for c in VALID} == set(KIND_NAMES)
    assert {c["error"] for c in MALFORMED} == {
        "crc", "cobs", "short", "version", "kind", "length", "value", "oversize"
    }


@pytest.mark.parametrize("case", VALID, ids=[c["id"] for c in VALID])
def test_encode_matches_vector(case: dict) -> None:
    frame = frame_of(case)
    assert f.encode_raw(frame).hex() == case["raw"]
    assert f.encode(frame).hex() == case["wire"]
    assert frame.kind == case["kind_code"]


@pytest.mark.parametrize("case", VALID, ids=[c["id"] for c in VALID])
def test_decode_matches_vector(case: dict) -> None:
    wire = bytes.fromhex(case["wire"])
    assert f.decode(wire) == frame_of(case)
    assert f.decode(wire[:-1]) == frame_of(case)  # without its delimiter too
    assert f.decode_raw(bytes.fromhex(case["raw"])) == frame_of(case)


@pytest.mark.parametrize("case", VALID, ids=[c["id"] for c in VALID])
def test_round_trip_every_kind(case: dict) -> None:
    frame = frame_of(case)
    assert f.Decoder().feed(f.encode(frame)) == [frame]


@pytest.mark.parametrize("case", VALID, ids=[c["id"] for c in VALID])
def test_wire_never_contains_zero_before_delimiter(case: dict) -> None:
    wire = bytes.fromhex(case["wire"])
    assert wire.index(0) == len(wire) - 1
    assert len(wire) <= f.MAX_ENCODED + 1


@pytest.mark.parametrize("case", VALID, ids=[c["id"] for c in VALID])
def test_every_strict_prefix_is_incomplete(case: dict) -> None:
    wire = bytes.fromhex(case["wire"])
    for cut in range(len(wire)):
        decoder = f.Decoder()
        assert decoder.feed(wire[:cut]) == []
        assert decoder.pending == cut
        # and the rest completes it
        assert decoder.feed(wire[cut:]) == [frame_of(case)]


@pytest.mark.parametrize("case", VALID, ids=[c["id"] for c in VALID])
def test_byte_by_byte_feeding(case: dict) -> None:
    wire = bytes.fromhex(case["wire"])
    decoder = f.Decoder()
    out: list[f.Frame | f.FrameError] = []
    for b in wire:
        out += decoder.feed(bytes((b,)))
    assert out == [frame_of(case)]
    assert decoder.pending == 0


@pytest.mark.parametrize("case", MALFORMED, ids=[c["id"] for c in MALFORMED])
def test_malformed_is_rejected_with_its_reason(case: dict) -> None:
    wire = bytes.fromhex(case["wire"])
    with pytest.raises(f.FrameError) as info:
        f.decode(wire)
    assert info.value.reason == case["error"]


@pytest.mark.parametrize("case", MALFORMED, ids=[c["id"] for c in MALFORMED])
def test_malformed_then_good_frame_still_decodes(case: dict) -> None:
    good = f.Reading(9, 9000, 127_000, 1_000, 1_270, 1_270, 1000, 60_000, 77, 0)
    out = f.Decoder().feed(bytes.fromhex(case["wire"]) + f.encode(good))
    assert [name_of(x) for x in out] == [case["error"], "reading"]
    assert out[-1] == good


@pytest.mark.parametrize("case", STREAMS, ids=[c["id"] for c in STREAMS])
def test_streams(case: dict) -> None:
    wire = bytes.fromhex(case["wire"])
    whole = f.Decoder().feed(wire)
    assert [name_of(x) for x in whole] == case["expect"]
    decoder = f.Decoder()
    bytewise: list[f.Frame | f.FrameError] = []
    for b in wire:
        bytewise += decoder.feed(bytes((b,)))
    assert [name_of(x) for x in bytewise] == case["expect"]


def test_buffer_is_capped_while_waiting_for_a_delimiter() -> None:
    decoder = f.Decoder()
    errors = []
    for _ in range(1000):
        errors += decoder.feed(b"\x01" * 7)
        assert decoder.pending <= f.MAX_ENCODED
    assert [name_of(e) for e in errors] == ["oversize"]  # reported once per run, not once per chunk
    good = f.Ack(1, 2)
    assert decoder.feed(b"\x00" + f.encode(good)) == [good]


def test_empty_frames_are_ignored() -> None:
    assert f.Decoder().feed(b"\x00\x00\x00") == []


def test_encode_rejects_out_of_range_values() -> None:
    with pytest.raises(f.FieldValueError):
        f.encode(f.Ack(-1, 0))
    with pytest.raises(f.FieldValueError):
        f.encode(f.Reading(2**32, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    with pytest.raises(f.FieldValueError):
        f.encode(f.Log(1, "é" * 25))  # 50 bytes of UTF-8
    with pytest.raises(f.FieldValueError):
        f.encode(f.Log(9, "x"))


def test_reading_units() -> None:
    r = f.Reading(1, 0, 127_123, 7_874, -12_345, 15_000, -823, 59_987, 5, 0)
    assert (r.vrms, r.irms, r.power_w, r.apparent_va, r.pf, r.freq_hz) == (
        127.123, 7.874, -1234.5, 1500.0, -0.823, 59.987
    )


def test_reading2_is_a_reading_with_the_export_register() -> None:
    """Code that handles readings takes both layouts; only the kind tells them apart on the wire."""
    old = f.Reading(5, 5000, 127_000, 1_000, 1_270, 1_270, 1000, 60_000, 777, 0)
    new = f.Reading2(5, 5000, 221_000, 9_000, -19_890, 19_890, -1000, 60_000, 777, 0, 4_242)
    assert isinstance(new, f.Reading) and not isinstance(old, f.Reading2)
    assert (new.power_w, new.energy_mwh, new.energy_export_mwh) == (-1989.0, 777, 4_242)
    assert f.encode_raw(new)[1] == 0x06 and len(f.encode_raw(new)) == 2 + 46 + 2
    assert f.encode_raw(old)[1] == 0x02 and len(f.encode_raw(old)) == 2 + 38 + 2
    # the first 38 payload bytes of a READING2 are the READING layout, field for field
    assert f.encode_raw(new)[2:40] == f.encode_raw(f.Reading(*[getattr(new, n) for n in old.__struct_fields__]))[2:40]
    out = f.Decoder().feed(f.encode(old) + f.encode(new))
    assert out == [old, new] and type(out[0]) is f.Reading and type(out[1]) is f.Reading2


# --- property tests ------------------------------------------------------------------------------------------

readings = st.builds(
    f.Reading,
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1), st.integers(-1000, 1000),
    st.integers(0, 2**16 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**16 - 1),
)
readings2 = st.builds(
    f.Reading2,
    st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1), st.integers(-1000, 1000),
    st.integers(0, 2**16 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**16 - 1), st.integers(0, 2**64 - 1),
)
any_frame = st.one_of(
    readings,
    readings2,
    st.builds(f.Hello, st.binary(min_size=8, max_size=8), *[st.integers(0, 255)] * 4, st.integers(0, 2**32 - 1),
              st.integers(0, 2**32 - 1)),
    st.builds(f.Ack, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(f.Log, st.integers(0, 4), st.text(max_size=16)),
    st.builds(f.Config, st.integers(0, 65535), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
              st.integers(0, 2**32 - 1), st.integers(-32768, 32767)),
    st.just(f.Sync()),
)


@given(any_frame)
def test_property_round_trip(frame: f.Frame) -> None:
    assert f.decode(f.encode(frame)) == frame


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=10))
def test_property_random_bytes_only_raise_codec_errors(data: bytes, cuts: list[int]) -> None:
    decoder = f.Decoder()
    pos = 0
    for c in [*cuts, len(data)]:
        for item in decoder.feed(data[pos:pos + c]):
            assert isinstance(item, f.Frame | f.FrameError)
        pos += c
        assert decoder.pending <= f.MAX_ENCODED
    with contextlib.suppress(f.FrameError):
        f.decode(data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(readings, readings2), min_size=1, max_size=5), st.binary(min_size=1, max_size=80),
       st.integers(0, 4), st.data())
def test_property_corruption_never_loses_a_following_valid_frame(
    batch: list[f.Reading], noise: bytes, where: int, data: st.DataObject
) -> None:
    """Corrupt one frame any way at all; every frame after the next delimiter still comes out intact."""
    victim = bytearray(f.encode(batch[0]))
    i = data.draw(st.integers(0, len(victim) - 1))
    victim[i: i + where] = noise
    # a sender leads with 0x00 after trouble; model that with the delimiter the victim keeps or gets back
    wire = bytes(victim) + b"\x00" + b"".join(f.encode(r) for r in batch[1:])
    out = f.Decoder().feed(wire)
    good = [x for x in out if isinstance(x, f.Reading)]
    if len(batch) > 1:
        assert good[-(len(batch) - 1):] == batch[1:]
    assert all(isinstance(x, f.Frame | f.FrameError) for x in out)
