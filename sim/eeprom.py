"""A simulated meter's EEPROM kept in a file, so stopping and starting the simulator is a power cycle.

The gateway files readings under (device, boot, seq) and takes a seq it already committed for a boot as a resend.
A simulator that forgot its meters' boot counters when restarted brought every meter back as boot 1 with seq from
1: keys the gateway had committed, so the new readings were acknowledged as duplicates and dropped until the seq
passed the old one (minutes of every meter's data, and a SYNC storm while the STATUS showed a seq below the
committed one), and the energy registers stepped back to 0. The real meter keeps its boot counter and energy
registers in EEPROM and saves the boot counter at every boot; :class:`EepromDir` does the same for the simulated
ones: one small JSON image per device, replaced atomically (write, fsync, rename) so a kill -9 in the middle of a
save leaves the previous image.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec

log = logging.getLogger(__name__)


class MeterEeprom(msgspec.Struct, frozen=True):
    """What survives a power cycle: the boot counter, both energy registers, the report period and calibration."""

    boot_count: int
    energy_mwh: int
    export_mwh: int
    report_period_ms: int
    calibration: tuple[int, int, int] | None
    """v_gain, i_gain, phase_cdeg as stored; None: never calibrated (the meter runs on factory gains)."""


_decoder = msgspec.json.Decoder(MeterEeprom)


class EepromDir:
    """The EEPROM images of a simulator's meters, one ``<device>.json`` each, in a directory only its owner reads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._saved: dict[str, MeterEeprom] = {}

    def load(self, device: str) -> MeterEeprom | None:
        """The image saved for ``device``; None for a meter never run here (or an unreadable image, like the
        firmware's blank or bad-CRC EEPROM)."""
        file = self.path / f"{device}.json"
        try:
            image = _decoder.decode(file.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("EEPROM image %s unreadable (%s): the meter starts blank", file, exc)
            return None
        self._saved[device] = image
        return image

    def save(self, device: str, image: MeterEeprom) -> bool:
        """Write ``image`` if it differs from the last one written for ``device``; True when it was written."""
        if self._saved.get(device) == image:
            return False
        file = self.path / f"{device}.json"
        tmp = file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, msgspec.json.encode(image))
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(file)
        self._saved[device] = image
        return True
