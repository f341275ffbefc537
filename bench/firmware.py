"""Firmware figures: flash/RAM use (avr-size), the sampling rate reached on the simulated ATmega328P, and the
speed of the libsimavr harness in simulated seconds per wall-clock second.

    .venv/bin/python bench/firmware.py [--sim-seconds 20]

Builds with ``make -C firmware`` into a temporary folder, runs the real ELF in ``simmeter`` with a 220 V / 10 A
PF 0.5 waveform, acknowledges every reading like a gateway, and prints:

- flash and static RAM against the budget (24 KB / 1.2 KB) and the chip (32 KB / 2 KB);
- sample pairs per second reported by the firmware (STATUS) and ADC conversions per second counted by the
  harness, against the 3200 pairs/s (6400 conversions/s) the timer is set to;
- simulated seconds per wall second (1.0 = real time: the ratio is against real time, the raw limit of the chip).
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocol import frames  # noqa: E402

TARGET_PAIRS = 3200


def build(out: Path) -> tuple[int, int]:
    subprocess.run(
        ["make", "-s", "-C", str(ROOT / "firmware"), f"O={out}", "fw", "sim"], check=True, stdout=subprocess.DEVNULL
    )
    sec = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\.\S+)\s+(\d+)", (out / "size.txt").read_text(), re.M)}
    return sec.get(".text", 0) + sec.get(".data", 0), sec.get(".data", 0) + sec.get(".bss", 0) + sec.get(".noinit", 0)


def run(out: Path, sim_seconds: float) -> tuple[dict[str, float], list[int], int]:
    proc = subprocess.Popen(
        [
            str(out / "simmeter"),
            "-w",
            "-t",
            str(sim_seconds),
            "--vrms",
            "220",
            "--irms",
            "10",
            "--phase",
            "60",
            str(out / "meter.elf"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    pty = proc.stderr.readline().split()[1]
    fd = os.open(pty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    dec = frames.Decoder()
    boot = 0
    rates: list[int] = []
    readings = 0
    os.write(fd, b"\x00")
    while proc.poll() is None:
        r, _, _ = select.select([fd], [], [], 0.1)
        if not r:
            continue
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, OSError):
            continue
        for f in dec.feed(data):
            if isinstance(f, frames.Hello):
                boot = f.boot_count
            elif isinstance(f, frames.Reading):
                readings += 1
                os.write(fd, frames.encode(frames.Ack(boot, f.seq)))
                if f.seq % 5 == 0:
                    os.write(fd, frames.encode(frames.Sync()))
            elif isinstance(f, frames.Status) and f.sample_rate_hz:
                rates.append(f.sample_rate_hz)
    _, err = proc.communicate()
    os.close(fd)
    line = [ln for ln in err.splitlines() if ln.startswith("STATS ")][-1]
    stats = {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    return stats, rates, readings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim-seconds", type=float, default=20.0)
    args = ap.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.monotonic()
        flash, ram = build(out)
        print(f"build: {time.monotonic() - t0:.1f} s")
        print(f"flash: {flash} B = {flash / 24576:.1%} of the 24 KB budget ({flash / 32768:.1%} of 32 KB)")
        print(f"static RAM (.data+.bss): {ram} B = {ram / 1229:.1%} of the 1.2 KB budget ({ram / 2048:.1%} of 2 KB)")
        stats, rates, readings = run(out, args.sim_seconds)
        print(
            f"harness: {stats['sim_s']:.1f} simulated s in {stats['wall_s']:.2f} wall s = "
            f"{stats['ratio']:.2f} simulated s per wall s (x real time)"
        )
        print(
            f"ADC conversions/s counted by the harness: {stats['conv_rate']:.1f} "
            f"({stats['conv_rate'] / (2 * TARGET_PAIRS):.4f} of the 6400/s timer setting)"
        )
        if rates:
            print(
                f"sample pairs/s reported by the firmware (STATUS): min {min(rates)} max {max(rates)} "
                f"({min(rates) / TARGET_PAIRS:.4f} of {TARGET_PAIRS})"
            )
        print(f"readings received: {readings}")


if __name__ == "__main__":
    main()
