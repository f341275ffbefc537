"""The real meter firmware (the AVR ELF that is flashed) in simavr, behind a relay pty the gateway opens.

The libsimavr harness (``firmware/sim/simmeter.c``, built by ``make -C firmware fw sim`` as tests/firmware does)
bridges the simulated UART to a pty of its own. A relay thread sits between that pty and a second one, whose
stable link ``ttyAICSS-<device>`` the gateway globs like any meter's. The relay is what makes the firmware a
chaos-run citizen:

- **Real time.** The harness lets simulated time run free (about 11 simulated seconds per wall second here, a
  whole core busy). The firmware's readings carry its uptime; after each fresh READING the relay SIGSTOPs the
  harness until the wall clock has caught up with that uptime (anchored at the boot's HELLO), so the
  meter reports once a second like the hardware and costs a tenth of a core.
- **Faults.** Unplug closes the gateway-facing pty and removes the link while the firmware keeps running (what
  it says meanwhile is lost on the wire; its queue and resends recover it), replug opens a new one, SIGUSR1 resets
  the MCU (EEPROM kept: the energy register restarts from its last once-a-minute save), and corrupt/drop frames
  go through the simulator's own sans-IO :class:`sim.faults.LinkFaults`.
- **Ground truth.** The firmware cannot say what it produced, so the relay records every fresh READING it reads
  off the UART, before any fault, with the boot of the last HELLO; every ACK that reached the firmware (after
  the faults) says how far each boot was acknowledged; STATUS gives the readings it discarded.

The EEPROM starts with an energy record (the documented ring layout of firmware/lib/storage/storage.h) so the
register is months old like the simulated meters'; a fresh register near 0 would make every step-back at a reset
look like a register restarted from zero to the analytics.
"""

from __future__ import annotations

import binascii
import contextlib
import errno
import os
import select
import shutil
import signal
import subprocess
import threading
import time
import tty
from pathlib import Path
from typing import IO, Final, NamedTuple

from protocol import frames
from sim.faults import LinkFaults
from sim.port import LINK_PREFIX

from .truth import RESET, UNACKED, Key, MeterRecord, Produced

REPO: Final = Path(__file__).resolve().parents[2]
EEPROM_SIZE: Final = 1024
RING_ADDR: Final = 0x020
RING_SALT: Final = 0xE4E7
PEER_POLL_S: Final = 0.02
WAVEFORM: Final = ("--vrms", "127", "--irms", "4.9", "--phase", "25")
"""A steady 564 W load at PF 0.91: the harness synthesises one waveform for the whole run."""


class FirmwareBuild(NamedTuple):
    elf: Path
    harness: Path


def build_firmware(out: Path) -> tuple[FirmwareBuild | None, str]:
    """The AVR ELF and the simavr harness built into ``out``; (None, why) when the toolchain is missing."""
    missing = [t for t in ("make", "gcc", "avr-gcc", "pkg-config") if shutil.which(t) is None]
    if missing:
        return None, f"{', '.join(missing)} not found (bash scripts/setup.sh installs the firmware toolchain)"
    done = subprocess.run(["make", "-s", "-C", str(REPO / "firmware"), f"O={out}", "fw", "sim"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return None, f"firmware build failed: {(done.stderr or done.stdout).strip()[-400:]}"
    return FirmwareBuild(out / "meter.elf", out / "simmeter"), ""


def eeprom_image(energy_mwh: int, boot_count: int) -> bytes:
    """A blank EEPROM with one valid energy-ring record (slot 0): ``rec_seq | boot_count | energy u48 | crc16``,
    the CRC being the frames' CRC-16/CCITT-FALSE xor the ring's salt (firmware/lib/storage/storage.c)."""
    record = (1).to_bytes(4, "little") + boot_count.to_bytes(4, "little") + energy_mwh.to_bytes(6, "little")
    crc = binascii.crc_hqx(record, 0xFFFF) ^ RING_SALT
    image = bytearray(b"\xff" * EEPROM_SIZE)
    image[RING_ADDR:RING_ADDR + 16] = record + crc.to_bytes(2, "little")
    return bytes(image)


class AvrMeter:
    """One firmware meter: harness process, relay thread, faults and ground truth. Public methods are thread-safe."""

    firmware = True

    def __init__(self, build: FirmwareBuild, workdir: Path, link_dir: Path, device: str, *, energy_mwh: int,
                 seed: str) -> None:
        self.device = device
        self.workdir = workdir
        self.link_path = link_dir / f"{LINK_PREFIX}{device}"
        self._build = build
        self._energy_mwh = energy_mwh
        self._lock = threading.RLock()
        self._tx_faults = LinkFaults(f"{seed}/{device}/tx")
        self._rx_faults = LinkFaults(f"{seed}/{device}/rx")
        self._up = frames.Decoder()  # the UART as the firmware wrote it
        self._down = frames.Decoder()  # what reached the firmware, after the faults
        self._proc: subprocess.Popen[bytes] | None = None
        self._uart = -1
        self._master: int | None = None
        self._pty_path = ""
        self._connected = False
        self._txbuf = bytearray()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # pacing
        self._anchor = (time.time(), 0)  # (wall s, uptime ms) at the boot's HELLO; the relay sees every HELLO
        self._resume_at: float | None = None
        # ground truth
        self._boot = 0
        self._boots = 0
        self._produced: list[Produced] = []
        self._last_seq: dict[int, int] = {}
        self._acked: dict[int, int] = {}
        self._lost: set[Key] = set()
        self._dropped: dict[int, int] = {}
        self._cut: int | None = None

    # ----- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        eeprom = self.workdir / f"eeprom-{self.device}.bin"
        eeprom.write_bytes(eeprom_image(self._energy_mwh, 0))
        log = (self.workdir / f"simavr-{self.device}.log").open("ab")
        cmd = [str(self._build.harness), "-w", "-e", str(eeprom), "--device-id", self.device, *WAVEFORM,
               str(self._build.elf)]
        setpriv = shutil.which("setpriv")
        if setpriv:  # SIGKILL (a paced harness may be stopped, and SIGTERM waits) if this process dies uncleanly
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.PIPE,
                                      start_new_session=True)
        assert self._proc.stderr is not None
        line = self._proc.stderr.readline().decode(errors="replace")
        if not line.startswith("PTY "):
            self._proc.kill()
            raise RuntimeError(f"simmeter did not start: {line!r}")
        # the rest of its stderr (RESET n, STATS) goes to the log, so the pipe never fills
        threading.Thread(target=_copy, args=(self._proc.stderr, log), daemon=True).start()
        self._uart = os.open(line.split()[1], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        with self._lock:
            self._open_pty()
        os.write(self._uart, b"\x00")  # the harness starts the MCU on the host's first byte
        self._thread = threading.Thread(target=self._run, name=f"avr-{self.device}", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def stop(self) -> None:
        """Stop the harness (its EEPROM is written back) and the relay; remove the link."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._terminate()
        with self._lock:
            self._close_pty()
            if self._uart >= 0:
                os.close(self._uart)
                self._uart = -1

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a paced harness is stopped: let it see the SIGTERM
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    # ----- the gateway-facing pty (lock held) ----------------------------------------------------------------

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._pty_path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(master, False)
        self._master, self._connected = master, False
        tmp = self.link_path.with_name(f".{self.link_path.name}.new")
        tmp.unlink(missing_ok=True)
        os.symlink(self._pty_path, tmp)
        os.replace(tmp, self.link_path)

    def _close_pty(self) -> None:
        if self._master is not None:
            os.close(self._master)
            self._master = None
        self._connected = False
        self._txbuf.clear()
        self._rx_faults.reset_stream()
        with contextlib.suppress(OSError):
            if os.readlink(self.link_path) == self._pty_path:
                self.link_path.unlink()

    def _check_peer(self) -> None:
        """POLLHUP on the master: nobody holds the slave open (the gateway closed the port or never opened it)."""
        if self._master is None:
            return
        events = select.poll()
        events.register(self._master, select.POLLIN)
        got = events.poll(0)
        flags = got[0][1] if got else 0
        self._connected = not flags & (select.POLLHUP | select.POLLERR)
        if not self._connected:
            self._txbuf.clear()

    # ----- relay ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._check_peer()
                self._pace()
                poller = select.poll()
                if self._uart >= 0:
                    poller.register(self._uart, select.POLLIN)
                if self._master is not None and self._connected:
                    poller.register(self._master, select.POLLIN | (select.POLLOUT if self._txbuf else 0))
                master = self._master
            for fd, revents in poller.poll(PEER_POLL_S * 1000):
                with self._lock:
                    if fd == self._uart and revents & select.POLLIN:
                        self._from_meter(self._read(fd))
                    elif fd == self._uart:  # the harness exited (its pty hung up): nothing more will come
                        os.close(self._uart)
                        self._uart = -1
                    elif fd == master and master == self._master:
                        if revents & select.POLLIN:
                            self._from_gateway(self._read(fd))
                        if revents & select.POLLOUT:
                            self._flush()

    @staticmethod
    def _read(fd: int) -> bytes:
        try:
            return os.read(fd, 4096)
        except (BlockingIOError, OSError):  # EIO: the other side closed; the next poll says so
            return b""

    def _from_meter(self, data: bytes) -> None:
        now = time.time()
        for item in self._up.feed(data):
            if isinstance(item, frames.Hello) and item.boot_count != self._boot:
                self._new_boot(item.boot_count)
            elif isinstance(item, frames.Reading) and not item.flags & frames.FLAG_RESENT:
                self._fresh(item, now)
            elif isinstance(item, frames.Status):
                self._dropped[self._boot] = max(self._dropped.get(self._boot, 0), item.dropped)
        if self._master is not None and self._connected:
            self._txbuf += self._tx_faults.apply_stream(data)
            self._flush()

    def _new_boot(self, boot: int) -> None:
        if self._boot:
            acked = self._acked.get(self._boot, 0)
            self._lost |= {(p.boot, p.seq) for p in self._produced if p.boot == self._boot and p.seq > acked}
        # a HELLO leaves right after the reset: uptime 0 is now (to a few ms), which paces the first reading too
        self._boot, self._anchor = boot, (time.time(), 0)
        self._boots += 1

    def _fresh(self, reading: frames.Reading, now: float) -> None:
        if self._cut is None:
            self._produced.append(Produced(self._boot, reading.seq, int(now * 1000), reading))
        self._last_seq[self._boot] = reading.seq
        due = self._anchor[0] + (reading.uptime_ms - self._anchor[1]) / 1000
        if due > now and self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGSTOP)
            self._resume_at = due

    def _pace(self) -> None:
        if self._resume_at is not None and time.time() >= self._resume_at and self._proc is not None:
            self._resume_at = None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGCONT)

    def _from_gateway(self, data: bytes) -> None:
        data = self._rx_faults.apply_stream(data)
        for item in self._down.feed(data):
            if isinstance(item, frames.Ack) and item.boot_count == self._boot:
                seq = min(item.seq, self._last_seq.get(self._boot, 0))
                self._acked[self._boot] = max(self._acked.get(self._boot, 0), seq)
        if data and self._uart >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._uart, data)

    def _flush(self) -> None:
        while self._txbuf and self._master is not None:
            try:
                n = os.write(self._master, self._txbuf)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                self._connected = False
                self._txbuf.clear()
                return
            del self._txbuf[:n]

    # ----- faults ----------------------------------------------------------------------------------------------

    def unplug(self) -> None:
        with self._lock:
            self._close_pty()

    def replug(self) -> None:
        with self._lock:
            if self._master is None:
                self._open_pty()

    def reboot(self, *, step_back: bool, off_ms: int) -> str:
        """Reset the MCU (EEPROM kept). The firmware has no brown-out save: its register always restarts from the
        last once-a-minute save, so every reset steps back; ``step_back`` and ``off_ms`` do not apply."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGUSR1)
        return "firmware reset (SIGUSR1): register back to its last save"

    def corrupt_next(self, n: int, direction: str) -> None:
        with self._lock:
            (self._tx_faults if direction == "tx" else self._rx_faults).corrupt_next += n

    def drop_next(self, n: int, direction: str) -> None:
        with self._lock:
            (self._tx_faults if direction == "tx" else self._rx_faults).drop_next += n

    # ----- end of the run --------------------------------------------------------------------------------------

    def cut_if_idle(self) -> bool:
        """Stop producing if everything the firmware produced is acknowledged (its queue is empty): unplug it and
        stop the harness. False while readings are still unacknowledged."""
        with self._lock:
            if self._cut is None:
                if self._acked.get(self._boot, 0) < self._last_seq.get(self._boot, 0):
                    return False
                self._cut = len(self._produced)
                self._close_pty()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._terminate()
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
                               sum(self._dropped.values()), self._boots)

    def faults_applied(self) -> tuple[int, int]:
        """(frames corrupted, frames dropped) in both directions."""
        with self._lock:
            return (self._tx_faults.corrupted + self._rx_faults.corrupted,
                    self._tx_faults.dropped + self._rx_faults.dropped)


def _copy(stream: IO[bytes], log: IO[bytes]) -> None:
    with log:
        for chunk in iter(lambda: stream.read1(4096), b""):  # type: ignore[attr-defined]
            log.write(chunk)
            log.flush()
