"""Write tests/vectors/frames.json: the shared test vectors for the Python and the C frame codecs.

Run once when the protocol changes (``python tests/vectors/make_vectors.py``) and commit the result; the tests
never regenerate it, so a codec change that alters bytes on the wire fails both codecs' tests.
Malformed frames are built here by hand (not by the codec) so that each one is broken in exactly one way.
"""

from __future__ import annotations

import binascii
import json
from pathlib import Path

from cobs import cobs

from protocol import frames as f

VALID: list[tuple[str, f.Frame]] = [
    ("hello", f.Hello(bytes.fromhex("a1c5500000000001"), 1, 2, 3, 1, 7, 1000)),
    ("hello_max", f.Hello(b"\xff" * 8, 255, 255, 255, 255, 0xFFFFFFFF, 0xFFFFFFFF)),
    (
        "reading_127v_resistive",
        f.Reading(1, 1000, 127_000, 7_874, 10_000, 10_000, 1000, 60_000, 0, f.FLAG_FIRST_AFTER_BOOT),
    ),
    (
        "reading_220v_inductive",
        f.Reading(42, 3_600_000, 220_150, 22_727, 25_000, 50_000, 500, 59_980, 12_345_678_901, 0),
    ),
    ("reading_export_negative", f.Reading(7, 7_000, 127_500, 3_000, -3_825, 3_825, -1000, 60_010, 5, f.FLAG_RESENT)),
    ("reading_no_signal", f.Reading(3, 3_000, 0, 0, 0, 0, 0, 0, 999, f.FLAG_NO_SIGNAL | f.FLAG_UNCALIBRATED)),
    (
        "reading_max",
        f.Reading(
            0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 2**31 - 1, 0xFFFFFFFF, 1000, 0xFFFF, 2**64 - 1, 0xFFFF
        ),
    ),
    ("reading_min_power", f.Reading(1, 0, 1, 1, -(2**31), 0, -1000, 1, 0, 0)),
    (
        "reading2_importing_night",
        f.Reading2(1, 1000, 127_000, 7_874, 10_000, 10_000, 1000, 60_000, 123_456, f.FLAG_FIRST_AFTER_BOOT, 0),
    ),
    (
        "reading2_exporting_noon",
        f.Reading2(42, 43_200_000, 221_300, 18_100, -40_000, 40_055, -999, 60_002, 9_876_543, 0, 12_345_678_901),
    ),
    (
        "reading2_max",
        f.Reading2(
            0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 2**31 - 1, 0xFFFFFFFF, 1000, 0xFFFF, 2**64 - 1, 0xFFFF,
            2**64 - 1,
        ),
    ),
    ("reading2_min_power", f.Reading2(1, 0, 1, 1, -(2**31), 0, -1000, 1, 0, f.FLAG_RESENT, 1)),
    ("status", f.Status(5, 9, 4, 0, 0, 7680)),
    ("status_dropped", f.Status(100, 140, 16, 24, 65535, 0)),
    ("log_info", f.Log(1, "boot ok")),
    ("log_empty", f.Log(0, "")),
    ("log_max_text", f.Log(4, "x" * f.MAX_LOG_TEXT)),
    ("config_result_applied", f.ConfigResult(9, f.CONFIG_APPLIED, 1000, 600_000, 200_000, 120)),
    ("config_result_rejected", f.ConfigResult(65535, f.CONFIG_REJECTED, 5000, 1, 10_000_000, -1000)),
    ("ack", f.Ack(7, 41)),
    ("ack_zero", f.Ack(0, 0)),
    ("config_full", f.Config(10, 2000, 612_345, 98_765, -250)),
    ("config_keep_all", f.Config(11)),
    ("sync", f.Sync()),
]


BY_NAME = dict(VALID)


def _fields(frame: f.Frame) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in frame.__struct_fields__:
        value = getattr(frame, name)
        out[name] = value.hex() if isinstance(value, bytes) else value
    return out


def _raw(version: int, kind: int, payload: bytes, crc_delta: int = 0) -> bytes:
    body = bytes((version, kind)) + payload
    crc = (binascii.crc_hqx(body, 0xFFFF) + crc_delta) & 0xFFFF
    return body + crc.to_bytes(2, "little")


def _wire(raw: bytes) -> bytes:
    return cobs.encode(raw) + b"\x00"


def malformed() -> list[dict[str, object]]:
    good_reading = f.encode_raw(BY_NAME["reading_127v_resistive"])
    payload = good_reading[2:-2]
    payload2 = f.encode_raw(BY_NAME["reading2_exporting_noon"])[2:-2]
    cases: list[tuple[str, bytes, str]] = [
        ("bad_crc", _wire(_raw(1, 0x02, payload, crc_delta=1)), "crc"),
        (
            "flipped_payload_bit",
            _wire(good_reading[:10] + bytes((good_reading[10] ^ 0x01,)) + good_reading[11:]),
            "crc",
        ),
        ("cobs_code_past_end", bytes((0x09, 0x01, 0x02, 0x00)), "cobs"),
        ("short_three_bytes", _wire(b"\x01\x10\x00"), "short"),
        ("one_byte", _wire(b"\x01"), "short"),
        ("version_2", _wire(_raw(2, 0x02, payload)), "version"),
        ("version_0", _wire(_raw(0, 0x12, b"")), "version"),
        ("unknown_kind_0x7f", _wire(_raw(1, 0x7F, b"")), "kind"),
        ("unknown_kind_0x00", _wire(_raw(1, 0x00, b"\x01\x02")), "kind"),
        ("reading_one_byte_short", _wire(_raw(1, 0x02, payload[:-1])), "length"),
        ("reading_one_byte_long", _wire(_raw(1, 0x02, payload + b"\x00")), "length"),
        # The two READING layouts are told apart by kind, never by length: each kind has exactly one length.
        ("reading_with_reading2_payload", _wire(_raw(1, 0x02, payload2)), "length"),
        ("reading2_with_reading_payload", _wire(_raw(1, 0x06, payload)), "length"),
        ("reading2_one_byte_short", _wire(_raw(1, 0x06, payload2[:-1])), "length"),
        ("ack_empty", _wire(_raw(1, 0x10, b"")), "length"),
        ("sync_with_payload", _wire(_raw(1, 0x12, b"\x01")), "length"),
        ("log_no_level", _wire(_raw(1, 0x04, b"")), "length"),
        ("log_text_49_bytes", _wire(_raw(1, 0x04, b"\x01" + b"y" * 49)), "length"),
        ("log_level_5", _wire(_raw(1, 0x04, b"\x05hi")), "value"),
        ("log_not_utf8", _wire(_raw(1, 0x04, b"\x01\xff\xfe")), "value"),
        ("oversize_66_bytes", b"\x01" * 66 + b"\x00", "oversize"),
    ]
    return [{"id": i, "wire": w.hex(), "error": e} for i, w, e in cases]


def streams() -> list[dict[str, object]]:
    """Byte streams mixing good and bad frames: every good frame must come out, every bad one as its error."""
    hello = f.encode(BY_NAME["hello"])
    reading = f.encode(BY_NAME["reading_127v_resistive"])
    reading2 = f.encode(BY_NAME["reading2_exporting_noon"])
    ack = f.encode(BY_NAME["ack"])
    raw = bytearray(f.encode_raw(BY_NAME["reading_127v_resistive"]))
    raw[5] ^= 0x40
    corrupt = _wire(bytes(raw))
    return [
        {"id": "good_bad_good", "wire": (hello + bytes(corrupt) + ack).hex(), "expect": ["hello", "crc", "ack"]},
        {"id": "leading_garbage_then_frame", "wire": (b"\x13\x37\x00" + reading).hex(), "expect": ["cobs", "reading"]},
        # Without a delimiter, line noise merges with the next frame and both are lost: why senders lead with 0x00.
        {"id": "noise_merged_into_frame", "wire": (b"\x13\x37" + reading + ack).hex(), "expect": ["crc", "ack"]},
        {"id": "resync_zeros", "wire": (b"\x00\x00" + hello + b"\x00" + reading).hex(), "expect": ["hello", "reading"]},
        {
            "id": "oversize_then_frame",
            "wire": (b"\x05" * 100 + b"\x00" + reading).hex(),
            "expect": ["oversize", "reading"],
        },
        {
            "id": "old_and_new_readings_interleaved",
            "wire": (reading + reading2 + corrupt + reading2 + reading).hex(),
            "expect": ["reading", "reading2", "crc", "reading2", "reading"],
        },
    ]


def main() -> None:
    valid = [
        {
            "id": name,
            "kind": type(frame).__name__.lower(),
            "kind_code": frame.kind,
            "fields": _fields(frame),
            "raw": f.encode_raw(frame).hex(),
            "wire": f.encode(frame).hex(),
        }
        for name, frame in VALID
    ]
    doc = {
        "protocol": "docs/protocol.md",
        "version": f.VERSION,
        "crc": {"name": "CRC-16/CCITT-FALSE", "input": "313233343536373839", "crc": 0x29B1},
        "valid": valid,
        "malformed": malformed(),
        "streams": streams(),
    }
    path = Path(__file__).with_name("frames.json")
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}: {len(valid)} valid, {len(doc['malformed'])} malformed, {len(doc['streams'])} streams")


if __name__ == "__main__":
    main()
