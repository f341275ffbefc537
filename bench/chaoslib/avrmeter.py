"""The real meter firmware (the AVR ELF that is flashed) in simavr as a chaos-run citizen: faults and ground truth.

:class:`sim.firmware.FirmwareMeter` runs the ELF in the libsimavr harness behind a relay thread and a pty whose
stable link ``ttyAICSS-<device>`` the gateway globs like any meter's, and paces the harness to real time (it
SIGSTOPs it after each fresh READING until the wall clock has caught up with the reading's uptime), so the meter
reports once a second like the hardware for a tenth of a core. :class:`AvrMeter` adds, through the relay's hooks:

- **Faults.** Unplug and replug are the firmware meter's own (what the firmware says while unplugged is lost on the
  wire; its queue and resends recover it); a reboot is a reset of the MCU (SIGUSR1, EEPROM kept: the energy
  register restarts from its last once-a-minute save); corrupt/drop frames go through the simulator's own sans-IO
  :class:`sim.faults.LinkFaults`, one per direction.
- **Ground truth.** The firmware cannot say what it produced, so the relay records every fresh READING it reads
  off the UART, before any fault, with the boot of the last HELLO; every ACK that reached the firmware (after
  the faults) says how far each boot was acknowledged; STATUS gives the readings it discarded.

The EEPROM starts with an energy record (the documented ring layout of firmware/lib/storage/storage.h) so the
register is months old like the simulated meters'; a fresh register near 0 would make every step-back at a reset
look like a register restarted from zero to the analytics.
"""

from __future__ import annotations

import binascii
from pathlib import Path
from typing import Final, Self

from protocol import frames
from sim.faults import LinkFaults
from sim.firmware import FirmwareBuild, FirmwareMeter

from .truth import RESET, UNACKED, Key, MeterRecord, Produced

EEPROM_SIZE: Final = 1024
RING_ADDR: Final = 0x020
RING_SALT: Final = 0xE4E7


def eeprom_image(energy_mwh: int, boot_count: int) -> bytes:
    """A blank EEPROM with one valid energy-ring record (slot 0): ``rec_seq | boot_count | energy u48 | crc16``,
    the CRC being the frames' CRC-16/CCITT-FALSE xor the ring's salt (firmware/lib/storage/storage.c)."""
    record = (1).to_bytes(4, "little") + boot_count.to_bytes(4, "little") + energy_mwh.to_bytes(6, "little")
    crc = binascii.crc_hqx(record, 0xFFFF) ^ RING_SALT
    image = bytearray(b"\xff" * EEPROM_SIZE)
    image[RING_ADDR : RING_ADDR + 16] = record + crc.to_bytes(2, "little")
    return bytes(image)


class AvrMeter(FirmwareMeter):
    """One firmware meter of the run, on the default waveform (a steady 564 W load at PF 0.91). Public methods are
    thread-safe."""

    firmware = True

    def __init__(self, build: FirmwareBuild, workdir: Path, link_dir: Path, device: str, *, energy_mwh: int,
                 seed: str) -> None:  # fmt: skip
        # a run killed uncleanly must not leave a harness behind, stopped by the pacing
        super().__init__(build, workdir, link_dir, device, kill_with_parent=True)
        self._energy_mwh = energy_mwh
        self._tx_faults = LinkFaults(f"{seed}/{device}/tx")
        self._rx_faults = LinkFaults(f"{seed}/{device}/rx")
        self._down = frames.Decoder()  # what reached the firmware, after the faults
        self._boots = 0
        self._produced: list[Produced] = []
        self._last_seq: dict[int, int] = {}
        self._acked: dict[int, int] = {}
        self._lost: set[Key] = set()
        self._dropped: dict[int, int] = {}
        self._cut: int | None = None

    def start(self) -> Self:
        self.eeprom.write_bytes(eeprom_image(self._energy_mwh, 0))
        return super().start()

    # ----- faults ----------------------------------------------------------------------------------------------

    def unplug(self) -> None:
        with self._lock:
            super().unplug()
            self._rx_faults.reset_stream()  # a frame the gateway had half written is gone with the port

    def reboot(self, *, step_back: bool, off_ms: int) -> str:
        """Reset the MCU (EEPROM kept). The firmware has no brown-out save: its register always restarts from the
        last once-a-minute save, so every reset steps back; ``step_back`` and ``off_ms`` do not apply."""
        self.reset()
        return "firmware reset (SIGUSR1): register back to its last save"

    def corrupt_next(self, n: int, direction: str) -> None:
        with self._lock:
            (self._tx_faults if direction == "tx" else self._rx_faults).corrupt_next += n

    def drop_next(self, n: int, direction: str) -> None:
        with self._lock:
            (self._tx_faults if direction == "tx" else self._rx_faults).drop_next += n

    # ----- the relay's hooks (lock held) -------------------------------------------------------------------------

    def _new_boot(self, boot: int) -> None:
        if self._boot:
            acked = self._acked.get(self._boot, 0)
            self._lost |= {(p.boot, p.seq) for p in self._produced if p.boot == self._boot and p.seq > acked}
        super()._new_boot(boot)
        self._boots += 1

    def _fresh(self, reading: frames.Reading, now: float) -> None:
        if self._cut is None:
            self._produced.append(Produced(self._boot, reading.seq, int(now * 1000), reading))
        self._last_seq[self._boot] = reading.seq
        super()._fresh(reading, now)

    def _status(self, status: frames.Status) -> None:
        self._dropped[self._boot] = max(self._dropped.get(self._boot, 0), status.dropped)

    def _to_gateway(self, data: bytes) -> bytes:
        return self._tx_faults.apply_stream(data)

    def _to_meter(self, data: bytes) -> bytes:
        data = self._rx_faults.apply_stream(data)
        for item in self._down.feed(data):
            if isinstance(item, frames.Ack) and item.boot_count == self._boot:
                seq = min(item.seq, self._last_seq.get(self._boot, 0))
                self._acked[self._boot] = max(self._acked.get(self._boot, 0), seq)
        return data

    # ----- end of the run --------------------------------------------------------------------------------------

    def cut_if_idle(self) -> bool:
        """Stop producing if everything the firmware produced is acknowledged (its queue is empty): unplug it and
        stop the harness. False while readings are still unacknowledged."""
        with self._lock:
            if self._cut is None:
                if self._acked.get(self._boot, 0) < self._last_seq.get(self._boot, 0):
                    return False
                self._cut = len(self._produced)
                self.unplug()
        self._halt()
        return True

    def cut_now(self) -> None:
        """Stop producing whatever is unacknowledged (it is then excused as unacknowledged at the end)."""
        with self._lock:
            if self._cut is None:
                self._cut = len(self._produced)
        self.cut_if_idle()

    def record(self) -> MeterRecord:
        with self._lock:
            produced = tuple(self._produced)
            acked = self._acked.get(self._boot, 0)
            excused = {k: RESET for k in self._lost}
            excused.update({(p.boot, p.seq): UNACKED for p in produced if p.boot == self._boot and p.seq > acked})
            return MeterRecord(self.device, True, produced, excused, dict(self._dropped),
                               sum(self._dropped.values()), self._boots)  # fmt: skip

    def faults_applied(self) -> tuple[int, int]:
        """(frames corrupted, frames dropped) in both directions."""
        with self._lock:
            return (self._tx_faults.corrupted + self._rx_faults.corrupted,
                    self._tx_faults.dropped + self._rx_faults.dropped)  # fmt: skip
