"""Fixtures for the firmware tests: one offline build per session, the host library, the simavr harness.

- ``fw_build`` (session): runs ``make -C firmware O=<tmp>`` (avr-gcc firmware, gcc host library, libsimavr
  harness) once and returns the paths; it also writes the avr-size figures to ``<tmp>/size.json``.
- ``cds`` (session): the host build of the portable C core (``libcds.so``) loaded with ctypes.
- ``figure`` (function): ``figure(text)`` records a measured figure for the terminal summary.
- ``simmeter`` (function): ``simmeter(*args, eeprom=None) -> SimMeter`` starts the harness on the real AVR ELF
  with a pseudo-terminal; the test talks to it with ``gateway.frames``. Every harness is stopped after the test.

Missing tools fail the run with a hint to run ``bash scripts/setup.sh``: CI must not pass by skipping.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fwlib import load_cds

from gateway import frames

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"


@dataclass(frozen=True)
class FirmwareBuild:
    out: Path
    elf: Path
    hex: Path
    lib: Path
    harness: Path
    flash_bytes: int
    ram_bytes: int


def _sections(size_a: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in size_a.splitlines():
        m = re.match(r"^(\.\S+)\s+(\d+)\s+\d+", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


FIGURES: list[str] = []


@pytest.fixture
def figure() -> Callable[[str], None]:
    """Record a measured figure (accuracy, size, rates): printed in the terminal summary so CI logs show it."""
    return FIGURES.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("firmware figures")
        for line in FIGURES:
            terminalreporter.line(line)


@pytest.fixture(scope="session")
def fw_build(tmp_path_factory: pytest.TempPathFactory) -> FirmwareBuild:
    for tool in ("make", "gcc", "avr-gcc", "avr-size", "pkg-config"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: run `bash scripts/setup.sh` (installs gcc-avr, avr-libc, simavr, ...)")
    out = tmp_path_factory.mktemp("fw")
    proc = subprocess.run(
        ["make", "-s", "-C", str(FIRMWARE), f"O={out}", "all"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"firmware build failed:\n{proc.stdout}\n{proc.stderr}")
    sec = _sections((out / "size.txt").read_text())
    flash = sec.get(".text", 0) + sec.get(".data", 0)
    ram = sec.get(".data", 0) + sec.get(".bss", 0) + sec.get(".noinit", 0)
    (out / "size.json").write_text(f'{{"flash_bytes": {flash}, "ram_bytes": {ram}}}\n')
    return FirmwareBuild(out, out / "meter.elf", out / "meter.hex", out / "libcds.so", out / "simmeter", flash, ram)


# ---- host library -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cds(fw_build: FirmwareBuild) -> ctypes.CDLL:
    return load_cds(fw_build.lib)


# ---- simavr harness -----------------------------------------------------------------------------------------


class SimMeter:
    """The real firmware ELF running in the libsimavr harness, its UART on a pty, spoken to with gateway.frames."""

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


@pytest.fixture
def simmeter(fw_build: FirmwareBuild) -> Iterator[Callable[..., SimMeter]]:
    started: list[SimMeter] = []

    def start(*args: str, eeprom: Path | None = None) -> SimMeter:
        sm = SimMeter(fw_build.harness, fw_build.elf, list(args), eeprom)
        started.append(sm)
        return sm

    yield start
    for sm in started:
        sm.stop()
