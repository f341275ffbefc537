"""Fixtures for the firmware tests: one offline build per session, the host library, the simavr harness.

- ``fw_build`` (session): runs ``make -C firmware O=<tmp>`` (avr-gcc firmware, gcc host library, libsimavr
  harness) once and returns the paths; it also writes the avr-size figures to ``<tmp>/size.json``.
- ``cds`` (session): the host build of the portable C core (``libcds.so``) loaded with ctypes.
- ``simmeter`` (function): ``simmeter(*args, eeprom=None) -> SimMeter`` starts the harness on the real AVR ELF
  with a pseudo-terminal; the test talks to it with ``protocol.frames``. Every harness is stopped after the test.

Missing tools fail the run with a hint to run ``bash scripts/setup.sh``: CI must not pass by skipping.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.firmware.fwlib import FirmwareBuild, SimMeter, load_cds

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"


def _sections(size_a: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in size_a.splitlines():
        m = re.match(r"^(\.\S+)\s+(\d+)\s+\d+", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


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
