"""A virtual meter on a pseudo-terminal: the I/O shell around :class:`sim.meter.MeterModel`.

The port itself is a :class:`sim.pty_port.PtyPort`, as for the firmware meters of :mod:`sim.firmware`: a pty
behind the stable link ``<link_dir>/ttyAICSS-<device>`` that the gateway opens like a USB serial port, unplug and
replug, and nothing written while nobody holds it open. This module moves frames across it: the model's frames
through the link faults onto the pty, what the gateway writes through the faults into the model, counted in
:class:`LinkStats`. What the meter says while the port is closed or unplugged is lost on the wire; the meter keeps
measuring into its RAM queue, and its resends recover the readings once the gateway opens the port and sends SYNC.

Every public method is thread-safe: it takes the owning :class:`sim.runner.MeterRunner`'s lock and wakes its loop.
"""

from __future__ import annotations

import errno
import os
import select
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from sim.faults import LinkFaults
from sim.meter import MeterModel
from sim.pty_port import PtyPort
from sim.truth import GroundTruth

if TYPE_CHECKING:
    from sim.eeprom import MeterEeprom
    from sim.runner import MeterRunner

TX_BUFFER_MAX = 64 * 1024
"""Bytes the simulator holds for a slow reader before it drops whole frames (counted in ``tx_overflow``)."""


class LinkStats(NamedTuple):
    """Counters for one virtual link (``tx`` = meter -> gateway)."""

    plugged: bool
    connected: bool
    """True while someone has the slave side open."""
    tx_frames: int
    tx_bytes: int
    rx_bytes: int
    tx_corrupted: int
    tx_dropped: int
    rx_corrupted: int
    rx_dropped: int
    tx_overflow: int
    replugs: int


class VirtualMeter:
    """One meter model bound to a pty and a stable link path. Create it with :meth:`MeterRunner.add_meter`."""

    def __init__(self, runner: MeterRunner, model: MeterModel, link_dir: Path, seed: int | str) -> None:
        self._runner = runner
        self.model = model
        self.device = model.device_id.hex()
        self._port = PtyPort(Path(link_dir), self.device)
        self.link_path = self._port.link_path
        self.tx_faults = LinkFaults(f"{seed}/{self.device}/tx")
        self.rx_faults = LinkFaults(f"{seed}/{self.device}/rx")
        self._tx_frames = self._tx_bytes = self._rx_bytes = self._tx_overflow = 0
        self._replugs = 0
        self._port.open()

    @property
    def plugged(self) -> bool:
        """The cable is in (a pty exists, whether or not the gateway holds it open). A plain read: the runner asks
        with its lock held, a test without it."""
        return self._port.plugged

    # ----- the pty (called with the runner's lock held) -----------------------------------------------------

    def _close_pty(self) -> None:
        self._port.close()
        self.rx_faults.reset_stream()  # a frame the gateway had half written is gone with the port

    def _check_peer(self) -> None:
        """Notice whether someone holds the slave open, then read what the gateway sent meanwhile: a SYNC written
        right after opening the port must get its answer."""
        if self._port.check_peer() & select.POLLIN:
            self._read()

    def _read(self) -> None:
        assert self._port.master is not None
        while True:
            try:
                data = os.read(self._port.master, 4096)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EIO:  # the slave side was closed
                    self._port.connected = False
                    self.rx_faults.reset_stream()
                    return
                raise
            if not data:
                return
            self._rx_bytes += len(data)
            data = self.rx_faults.apply_stream(data)
            if data:
                self._emit(self.model.receive_frames(data, self._runner.now_ms()))

    def _emit(self, out: list[bytes]) -> None:
        """Frames the meter wrote on its UART: through the fault injector onto the pty (if anyone listens)."""
        if not out or not self._port.connected or not self._port.plugged:
            return  # nobody has the port open: the bytes go nowhere (and no fault is spent on them)
        out = self.tx_faults.apply(out)
        for frame in out:
            if len(self._port.txbuf) + len(frame) > TX_BUFFER_MAX:
                self._tx_overflow += 1
                continue
            self._port.txbuf += frame
            self._tx_frames += frame != b"\x00"
        self._flush()

    def _flush(self) -> None:
        self._tx_bytes += self._port.flush()

    def _service(self, now_ms: int) -> tuple[int, int | None, bool]:
        """One loop turn: notice the peer, run the meter to ``now_ms``, write. Returns (next deadline in
        simulated ms, fd to poll or None, whether the fd also waits for writability)."""
        self._check_peer()
        self._emit(self.model.advance_frames(now_ms))
        fd = self._port.master if self._port.connected else None
        return self.model.next_deadline_ms(), fd, bool(self._port.txbuf)

    def _on_ready(self, revents: int) -> None:
        if not self._port.plugged:
            return
        if revents & select.POLLIN:
            self._read()
        if revents & select.POLLOUT:
            self._flush()
        if revents & (select.POLLHUP | select.POLLERR):
            self._port.peer_gone()

    # ----- public, thread-safe -------------------------------------------------------------------------------

    @property
    def pty_path(self) -> str:
        """The current slave device (/dev/pts/N); changes on replug. Empty while unplugged."""
        with self._runner.lock:
            return self._port.path if self._port.plugged else ""

    def unplug(self) -> None:
        """Pull the USB cable: the gateway's port fails, the link disappears, the meter keeps queueing."""
        with self._runner.lock:
            self._close_pty()
        self._runner.wake()

    def replug(self) -> None:
        """Plug it back: a new pty, the stable link re-pointed to it. No-op while plugged."""
        with self._runner.lock:
            if not self._port.plugged:
                self._replugs += 1
                self._port.open()
        self._runner.wake()

    def reboot(self, off_ms: int = 0, *, save_energy: bool = True, lose_hello: bool = False) -> None:
        """Reset the meter (boot count +1, seq from 1, RAM queue lost); ``off_ms`` of darkness first. The energy
        register is kept (``save_energy=False``: back to the last once-a-minute save, like a watchdog reset).
        ``lose_hello``: the HELLO of the new boot is lost on the wire (only with ``off_ms=0``)."""
        if lose_hello and off_ms:
            raise ValueError("lose_hello needs off_ms=0: after a dark period the HELLO comes later")
        with self._runner.lock:
            now = self._runner.now_ms()
            if lose_hello:
                # What was due before the reset goes out first, so the one frame dropped is the HELLO itself (a
                # drop armed before the call would hit whatever frame a lagging runner emitted next).
                self._emit(self.model.advance_frames(now))
                self.tx_faults.drop_next += 1
            self.model.reboot(now, off_ms=off_ms, save_energy=save_energy)
            self._emit(self.model.advance_frames(now))
        self._runner.wake()

    def wipe_eeprom_and_reboot(self) -> None:
        """Replace the meter's EEPROM (boot counter and registers blank) and reset it: it comes back as boot 1."""
        with self._runner.lock:
            self.model.wipe_eeprom()
            self.model.reboot(self._runner.now_ms(), save_energy=False)
            self._emit(self.model.advance_frames(self._runner.now_ms()))
        self._runner.wake()

    def eeprom(self, *, brown_out: bool = False) -> MeterEeprom:
        """The meter's EEPROM image now (see :meth:`sim.meter.MeterModel.eeprom`)."""
        with self._runner.lock:
            return self.model.eeprom(brown_out=brown_out)

    def corrupt_next(self, n: int = 1, direction: str = "tx") -> None:
        """Flip one bit in each of the next ``n`` frames (``tx`` meter -> gateway, ``rx`` gateway -> meter)."""
        with self._runner.lock:
            self._faults(direction).corrupt_next += n

    def drop_next(self, n: int = 1, direction: str = "tx") -> None:
        """Lose the next ``n`` frames in ``direction``."""
        with self._runner.lock:
            self._faults(direction).drop_next += n

    def set_corrupt_rate(self, rate: float, direction: str = "tx") -> None:
        """Corrupt each frame in ``direction`` with probability ``rate`` (0 turns it off)."""
        with self._runner.lock:
            self._faults(direction).corrupt_rate = rate

    def set_drop_rate(self, rate: float, direction: str = "tx") -> None:
        """Lose each frame in ``direction`` with probability ``rate`` (0 turns it off)."""
        with self._runner.lock:
            self._faults(direction).drop_rate = rate

    def set_drift_ppm(self, ppm: float) -> None:
        """The meter's uptime clock runs ``ppm`` parts per million fast (negative: slow) from now on."""
        with self._runner.lock:
            self.model.set_drift_ppm(ppm, self._runner.now_ms())
            self._emit(self.model.advance_frames(self._runner.now_ms()))
        self._runner.wake()

    def set_mains(self, on: bool) -> None:
        """Supply present or absent (power cut: the meter, on USB power, reports NO_SIGNAL)."""
        with self._runner.lock:
            self.model.set_mains(on, self._runner.now_ms())
            self._emit(self.model.advance_frames(self._runner.now_ms()))

    def set_storage_fails(self, fails: bool) -> None:
        """Make CONFIG answer status 2 (applied, not persisted) while ``fails``."""
        with self._runner.lock:
            self.model.storage_fails = fails

    def log(self, level: int, text: str) -> None:
        """Make the firmware send a LOG frame."""
        with self._runner.lock:
            self.model.log(level, text, self._runner.now_ms())
            self._emit(self.model.advance_frames(self._runner.now_ms()))
        self._runner.wake()

    def truth(self) -> GroundTruth:
        """A consistent snapshot of the meter's ground truth (see :class:`sim.truth.GroundTruth`)."""
        with self._runner.lock:
            return self.model.truth()

    def stats(self) -> LinkStats:
        with self._runner.lock:
            return LinkStats(
                plugged=self._port.plugged,
                connected=self._port.connected,
                tx_frames=self._tx_frames,
                tx_bytes=self._tx_bytes,
                rx_bytes=self._rx_bytes,
                tx_corrupted=self.tx_faults.corrupted,
                tx_dropped=self.tx_faults.dropped,
                rx_corrupted=self.rx_faults.corrupted,
                rx_dropped=self.rx_faults.dropped,
                tx_overflow=self._tx_overflow,
                replugs=self._replugs,
            )

    def _faults(self, direction: str) -> LinkFaults:
        if direction == "tx":
            return self.tx_faults
        if direction == "rx":
            return self.rx_faults
        raise ValueError(f"direction must be 'tx' or 'rx', not {direction!r}")

    def close(self) -> None:
        """Close the pty and remove the link (the runner calls this on stop)."""
        with self._runner.lock:
            self._close_pty()
