"""``python -m gateway monitor PORT``: open a meter's port, send SYNC and pretty-print every frame and error.

For field debugging with the gateway service stopped (the port is opened exclusively). It ACKs nothing unless
``--ack`` is given, so the meter keeps its readings for the real gateway; with ``--ack`` it ACKs each reading
cumulatively, like the gateway would (without storing anything).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import serial

from protocol import frames

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def describe(item: frames.Frame | frames.FrameError) -> str:
    """One human-readable line per frame or error."""
    if isinstance(item, frames.FrameError):
        return f"ERROR   {item.reason:<9} {item} raw={item.raw.hex()}"
    if isinstance(item, frames.Reading):
        flags = [n for bit, n in ((frames.FLAG_RESENT, "RESENT"), (frames.FLAG_V_CLIP, "V_CLIP"),
                                  (frames.FLAG_I_CLIP, "I_CLIP"), (frames.FLAG_UNCALIBRATED, "UNCALIBRATED"),
                                  (frames.FLAG_NO_SIGNAL, "NO_SIGNAL"),
                                  (frames.FLAG_FIRST_AFTER_BOOT, "FIRST_AFTER_BOOT")) if item.flags & bit]  # fmt: skip
        # READING2 (a bidirectional meter) adds the exported-energy register
        export = f" Eexp={item.energy_export_mwh / 1e6:.6f}kWh" if isinstance(item, frames.Reading2) else ""
        return (
            f"READING seq={item.seq} uptime={item.uptime_ms / 1000:.3f}s V={item.vrms:.3f} I={item.irms:.3f} "
            f"P={item.power_w:.1f}W S={item.apparent_va:.1f}VA pf={item.pf:.3f} f={item.freq_hz:.3f}Hz "
            f"E={item.energy_mwh / 1e6:.6f}kWh{export} flags={'|'.join(flags) or '-'}"
        )
    if isinstance(item, frames.Hello):
        return (
            f"HELLO   device={item.device} fw={item.firmware} hw={item.hw_rev} boot={item.boot_count} "
            f"period={item.report_period_ms}ms"
        )
    if isinstance(item, frames.Status):
        return (
            f"STATUS  oldest={item.oldest_seq} next={item.next_seq} queued={item.queued} dropped={item.dropped} "
            f"rx_errors={item.rx_errors} sample_rate={item.sample_rate_hz}Hz"
        )
    if isinstance(item, frames.Log):
        level = _LEVELS[item.level] if item.level < len(_LEVELS) else str(item.level)
        return f"LOG     {level}: {item.text}"
    if isinstance(item, frames.ConfigResult):
        return (
            f"CONFIG_RESULT request={item.request_id} status={item.status} period={item.report_period_ms}ms "
            f"v_gain={item.v_gain} i_gain={item.i_gain} phase={item.phase_cdeg}"
        )
    return f"{type(item).__name__.upper()} {item}"


def monitor(
    port: str, *, baudrate: int = 115200, ack: bool = False, count: int = 0, duration: float = 0.0,
    out: TextIO = sys.stdout,
) -> int:  # fmt: skip
    """Print frames until Ctrl-C, ``count`` frames or ``duration`` seconds. Returns the process exit code."""
    try:
        ser = serial.Serial(port, baudrate, timeout=0.2, exclusive=True)
    except (serial.SerialException, OSError) as exc:
        print(f"cannot open {port}: {exc}", file=sys.stderr)
        return 2
    decoder = frames.Decoder()
    boot: int | None = None
    seen = 0
    deadline = time.monotonic() + duration if duration else float("inf")
    with ser:
        ser.write(frames.DELIMITER + frames.encode(frames.Sync()))
        print(f"{port}: SYNC sent{' (ACKing readings)' if ack else ''}; Ctrl-C to stop", file=out, flush=True)
        try:
            while time.monotonic() < deadline and not (count and seen >= count):
                data = ser.read(ser.in_waiting or 1)
                for item in decoder.feed(data):
                    seen += 1
                    stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
                    print(f"{stamp} {describe(item)}", file=out, flush=True)
                    if isinstance(item, frames.Hello):
                        boot = item.boot_count
                    elif ack and boot is not None and isinstance(item, frames.Reading):
                        ser.write(frames.encode(frames.Ack(boot, item.seq)))
        except KeyboardInterrupt:
            pass
        except (serial.SerialException, OSError) as exc:
            print(f"{port}: link lost: {exc}", file=sys.stderr)
            return 1
    return 0
