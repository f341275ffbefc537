"""Helpers shared by the firmware tests: ctypes mirrors of the host build of the core (firmware/host/host_api.c),
the build record, and SimMeter, the real ELF running in the libsimavr harness."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protocol import frames


class Wave(ctypes.Structure):
    """Mirror of wave_t (firmware/sim/waveform.h)."""

    _fields_ = [
        (name, ctypes.c_double)
        for name in (
            "freq_hz",
            "vrms",
            "irms",
            "phase_deg",
            "vh3",
            "vh5",
            "ih3",
            "ih5",
            "v_dc_mv",
            "i_dc_mv",
            "noise_mv",
            "sensor_lag_deg",
            "v_mv_per_v",
            "i_mv_per_a",
            "bias_mv",
            "vref_mv",
        )
    ] + [("rng", ctypes.c_uint64)]


class Calib(ctypes.Structure):
    """Mirror of calib_t (firmware/lib/metering/metering.h)."""

    _fields_ = [
        ("report_period_ms", ctypes.c_uint32),
        ("v_gain", ctypes.c_uint32),
        ("i_gain", ctypes.c_uint32),
        ("phase_cdeg", ctypes.c_int16),
    ]


class Result(ctypes.Structure):
    """Mirror of metering_result_t."""

    _fields_ = [
        ("vrms_mv", ctypes.c_uint32),
        ("irms_ma", ctypes.c_uint32),
        ("p_mw", ctypes.c_int32),
        ("s_mva", ctypes.c_uint32),
        ("pf_milli", ctypes.c_int16),
        ("freq_mhz", ctypes.c_uint16),
        ("clip", ctypes.c_uint8),
        ("pairs", ctypes.c_uint32),
    ]


FACTORY = {"report_period_ms": 1000, "v_gain": 976563, "i_gain": 146484, "phase_cdeg": 0}


def load_cds(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    u8p = ctypes.POINTER(ctypes.c_uint8)
    u64p = ctypes.POINTER(ctypes.c_uint64)
    u32p = ctypes.POINTER(ctypes.c_uint32)
    lib.cds_crc16.restype = ctypes.c_uint16
    lib.cds_crc16.argtypes = [u8p, ctypes.c_uint32]
    lib.cds_encode.restype = ctypes.c_uint32
    lib.cds_encode.argtypes = [ctypes.c_uint8, u64p, u8p, ctypes.c_uint32, u8p, u8p, u32p]
    lib.cds_decode_wire.restype = ctypes.c_int
    lib.cds_decode_wire.argtypes = [u8p, ctypes.c_uint32, u8p, u64p, u8p, u32p]
    lib.cds_stream.restype = ctypes.c_uint32
    lib.cds_stream.argtypes = [u8p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_int32), ctypes.c_uint32, u32p]
    lib.cds_metering_run.restype = None
    lib.cds_metering_run.argtypes = [
        ctypes.POINTER(Wave),
        ctypes.POINTER(Calib),
        ctypes.c_uint32,
        ctypes.POINTER(Result),
        u64p,
    ]
    lib.cds_energy_add.argtypes = [u64p, ctypes.c_int32, ctypes.c_uint32]
    lib.cds_pair_rate.restype = ctypes.c_uint32
    lib.cds_meter_boot.argtypes = [ctypes.c_uint32, ctypes.c_uint32]
    lib.cds_meter_take_tx.restype = ctypes.c_uint32
    lib.cds_meter_take_tx.argtypes = [u8p, ctypes.c_uint32]
    lib.cds_meter_rx.argtypes = [u8p, ctypes.c_uint32, ctypes.c_uint32]
    lib.cds_meter_window.argtypes = [ctypes.POINTER(Result), ctypes.c_uint32]
    lib.cds_meter_poll.argtypes = [ctypes.c_uint32]
    lib.cds_meter_energy.restype = ctypes.c_uint64
    lib.cds_meter_export.restype = ctypes.c_uint64
    lib.cds_meter_boot_count.restype = ctypes.c_uint32
    lib.cds_meter_calib.restype = ctypes.c_uint32
    lib.cds_meter_calib.argtypes = [ctypes.POINTER(Calib)]
    lib.cds_meter_reconfigure.restype = ctypes.c_uint8
    lib.cds_eeprom.restype = u8p
    lib.cds_eeprom_writes.restype = u32p
    lib.cds_eeprom_fail.argtypes = [ctypes.c_int]
    lib.cds_storage_slots.restype = ctypes.c_uint32
    return lib


@dataclass(frozen=True)
class FirmwareBuild:
    out: Path
    elf: Path
    hex: Path
    lib: Path
    harness: Path
    flash_bytes: int
    ram_bytes: int


class SimMeter:
    """The real firmware ELF running in the libsimavr harness, its UART on a pty, spoken to with protocol.frames."""

    def __init__(self, harness: Path, elf: Path, args: list[str], eeprom: Path | None) -> None:
        cmd = [str(harness), "-w"]
        if eeprom is not None:
            cmd += ["-e", str(eeprom)]
        cmd += [*args, str(elf)]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        if not line.startswith("PTY "):
            self.proc.kill()
            raise RuntimeError(f"harness did not start: {line!r}")
        self.pty = line.split()[1]
        self.fd = os.open(self.pty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.decoder = frames.Decoder()
        self.received: list[frames.Frame | frames.FrameError] = []
        self._cursor = 0
        self.stats: dict[str, float] = {}
        os.write(self.fd, b"\x00")  # the harness starts the MCU on the host's first byte

    def send(self, frame: frames.Frame) -> None:
        self.send_bytes(frames.encode(frame))

    def send_bytes(self, data: bytes) -> None:
        os.write(self.fd, data)

    def _pump(self, timeout: float) -> None:
        r, _, _ = select.select([self.fd], [], [], timeout)
        if r:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return
            except OSError:  # the harness closed the pty
                time.sleep(0)
                return
            self.received.extend(self.decoder.feed(data))

    def next_frame(
        self, pred: Callable[[frames.Frame | frames.FrameError], bool], timeout: float = 30.0, what: str = "frame"
    ) -> frames.Frame | frames.FrameError:
        """Return the next received frame (after the last one returned) that satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.received):
                f = self.received[self._cursor]
                self._cursor += 1
                if pred(f):
                    return f
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; received {self.received[-8:]}")
            if self.proc.poll() is not None:
                self._pump(0)
                if self._cursor >= len(self.received):
                    raise AssertionError(f"harness exited before {what}; received {self.received[-8:]}")
            self._pump(0.05)

    def next_of(self, cls: type, timeout: float = 30.0, pred: Callable[..., bool] | None = None):  # type: ignore[no-untyped-def]
        return self.next_frame(lambda f: isinstance(f, cls) and (pred is None or pred(f)), timeout, cls.__name__)

    def reset(self) -> None:
        """Reset the MCU inside the harness; EEPROM is kept, like a power cycle."""
        self.proc.send_signal(signal.SIGUSR1)

    def stop(self) -> dict[str, float]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        with_stats = [ln for ln in err.splitlines() if ln.startswith("STATS ")]
        if with_stats:
            self.stats = {k: float(v) for k, v in (kv.split("=") for kv in with_stats[-1].split()[1:])}
        with contextlib.suppress(OSError):
            os.close(self.fd)
        return self.stats
