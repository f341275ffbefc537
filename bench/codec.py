"""Frame codec throughput: READING frames decoded and encoded per second in one process.

Prints the codec's rates next to the raw limit measured in the same run: the C primitives alone (split on 0x00,
COBS decode, CRC, struct unpack) without building typed frames, i.e. the best any Python decoder on these
libraries could do. Target: >= 200,000 READING frames/s decoded.

    python bench/codec.py [--frames 200000] [--chunk 4096] [--check]

``--check`` exits 1 when decode / raw limit drops below ``FLOOR_DECODE_TO_RAW``: the ratio, not the rate, so a
slower or busier machine does not fail it, but a codec change that adds per-frame work does.
"""

# ruff: noqa: E402  (imports follow the sys.path fix below)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script from bench/: keep bench/ (whose gateway.py would shadow the package) off the import path.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "bench"]
sys.path.insert(0, str(_ROOT))

import argparse
import binascii
import random
import struct
import time

from cobs import cobs

from protocol import frames as f

FLOOR_DECODE_TO_RAW = 0.45
"""Measured 0.61 on the 2-core development machine under a load average of about 15; margin for noise."""


def make_wire(n: int, seed: int = 1) -> tuple[list[f.Reading], bytes]:
    rng = random.Random(seed)
    readings = [
        f.Reading(
            seq=i + 1,
            uptime_ms=1000 * (i + 1),
            vrms_mv=rng.randint(120_000, 135_000),
            irms_ma=rng.randint(0, 40_000),
            p_dw=rng.randint(0, 50_000),
            s_dva=rng.randint(0, 55_000),
            pf_milli=rng.randint(500, 1000),
            freq_mhz=rng.randint(59_900, 60_100),
            energy_mwh=1_000_000 + 500 * i,
            flags=0,
        )
        for i in range(n)
    ]
    return readings, b"".join(f.encode(r) for r in readings)


def best_of(runs: int, fn) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--chunk", type=int, default=4096, help="bytes per feed() call, like a serial read")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--check", action="store_true", help=f"exit 1 if decode / raw limit < {FLOOR_DECODE_TO_RAW}")
    args = ap.parse_args()

    readings, wire = make_wire(args.frames)
    chunks = [wire[i: i + args.chunk] for i in range(0, len(wire), args.chunk)]
    n = len(readings)

    def decode_stream() -> None:
        dec = f.Decoder()
        count = 0
        for c in chunks:
            count += len(dec.feed(c))
        assert count == n, count

    unpack = struct.Struct("<IIIIiIhHQH").unpack_from

    def raw_limit() -> None:
        count = 0
        for part in wire.split(b"\x00"):
            if part:
                raw = cobs.decode(part)
                if binascii.crc_hqx(raw[:-2], 0xFFFF) == raw[-2] | (raw[-1] << 8):
                    unpack(raw, 2)
                    count += 1
        assert count == n

    def encode_all() -> None:
        enc = f.encode
        for r in readings:
            enc(r)

    t_dec = best_of(args.runs, decode_stream)
    t_raw = best_of(args.runs, raw_limit)
    t_enc = best_of(args.runs, encode_all)
    frame_len = len(wire) // n
    print(f"frames: {n} READING frames, {frame_len} bytes each on the wire, fed in {args.chunk}-byte chunks")
    print(f"decode (Decoder.feed -> typed Reading): {n / t_dec:>12,.0f} frames/s")
    print(f"raw limit (split+COBS+CRC+unpack, no objects): {n / t_raw:>12,.0f} frames/s")
    print(f"decode / raw limit: {t_raw / t_dec:.2f}")
    print(f"encode (typed Reading -> wire bytes): {n / t_enc:>12,.0f} frames/s")
    line_rate = 115_200 / 10 / frame_len
    print(f"one meter's UART at 115200 baud carries at most {line_rate:,.0f} frames/s; "
          f"decode covers {n / t_dec / line_rate:,.0f} such links on one core")
    print(f"target >= 200,000 decoded frames/s: {'met' if n / t_dec >= 200_000 else 'NOT met'}")
    if args.check:
        ok = t_raw / t_dec >= FLOOR_DECODE_TO_RAW
        print(f"check: decode / raw limit {t_raw / t_dec:.2f} {'>=' if ok else '<'} floor {FLOOR_DECODE_TO_RAW}")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
