"""The real meter firmware (the AVR ELF that is flashed) in simavr, on a pty the gateway opens like any meter's.

The libsimavr harness (``firmware/sim/simmeter.c``, built with ``make -C firmware fw sim`` as tests/firmware does)
runs the unchanged ELF and bridges its UART to a pty of its own. A relay thread sits between that pty and a second
one whose stable link, ``<link_dir>/ttyAICSS-<device>``, is the one the gateway globs. The relay exists for two
reasons:

- **Real time.** The harness lets simulated time run free (about ten simulated seconds per wall second on the
  development machine, a whole core busy), so a 1 s report period would come out ten times a second. After each
  fresh READING the relay SIGSTOPs the harness until the wall clock has caught up with the reading's uptime
  (anchored at the boot's HELLO): the meter reports at its period, like the board, and costs a fraction of a core.
- **A port that can be closed.** Like :mod:`sim.port` (and a USB-serial adapter), what the firmware says while no
  one holds the port open is lost on the wire; its queue and the gateway's SYNC recover it. Writing into a pty
  nobody reads would otherwise fill the kernel buffer and stall the simulated MCU.

The harness synthesises one steady waveform (``--vrms --irms --phase``): the firmware measures it with its own
maths and calibration, which is what a CONFIG changes.
"""

from __future__ import annotations

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
from sim.port import LINK_PREFIX

REPO: Final = Path(__file__).resolve().parents[1]
PEER_POLL_S: Final = 0.02
"""How often (wall time) the relay checks whether the gateway holds the port open, and resumes a paused harness."""
TOOLS: Final = ("make", "gcc", "avr-gcc", "pkg-config")


class FirmwareBuild(NamedTuple):
    elf: Path
    harness: Path


def build_firmware(out: Path) -> tuple[FirmwareBuild | None, str]:
    """Build the AVR ELF and the simavr harness into ``out``: (build, "") or (None, why) when the toolchain is
    missing or the build fails."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return None, f"{', '.join(missing)} not found (bash scripts/setup.sh installs the firmware toolchain)"
    done = subprocess.run(["make", "-s", "-C", str(REPO / "firmware"), f"O={out}", "fw", "sim"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        return None, f"firmware build failed: {(done.stderr or done.stdout).strip()[-400:]}"
    return FirmwareBuild(out / "meter.elf", out / "simmeter"), ""


class FirmwareMeter:
    """One firmware meter: the harness process (its EEPROM in ``workdir``) and the relay thread."""

    def __init__(self, build: FirmwareBuild, workdir: Path, link_dir: Path, device: str, *, vrms: float = 127.0,
                 irms: float = 4.9, phase_deg: float = 25.0) -> None:  # fmt: skip
        self.device = device
        self.link_path = Path(link_dir) / f"{LINK_PREFIX}{device}"
        self.eeprom = Path(workdir) / f"eeprom-{device}.bin"
        self._build = build
        self._waveform = ["--vrms", str(vrms), "--irms", str(irms), "--phase", str(phase_deg)]
        self._log_path = Path(workdir) / f"simavr-{device}.log"
        self._lock = threading.Lock()
        self._up = frames.Decoder()
        self._proc: subprocess.Popen[bytes] | None = None
        self._uart = -1
        self._master: int | None = None
        self._pty_path = ""
        self._connected = False
        self._txbuf = bytearray()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._boot = 0
        self._anchor = (time.time(), 0)  # (wall s, uptime ms) of the boot's HELLO
        self._resume_at: float | None = None

    @property
    def pty_path(self) -> str:
        with self._lock:
            return self._pty_path

    def start(self) -> FirmwareMeter:
        log = self._log_path.open("ab")
        cmd = [str(self._build.harness), "-w", "-e", str(self.eeprom), "--device-id", self.device, *self._waveform,
               str(self._build.elf)]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.PIPE,
                                      start_new_session=True)  # fmt: skip
        assert self._proc.stderr is not None
        line = self._proc.stderr.readline().decode(errors="replace")
        if not line.startswith("PTY "):
            self._proc.kill()
            self._proc.wait()
            log.close()
            raise RuntimeError(f"simmeter did not start: {line!r} (see {self._log_path})")
        # the rest of its stderr (RESET n, STATS) goes to the log, so the pipe never fills
        threading.Thread(target=_copy, args=(self._proc.stderr, log), daemon=True).start()
        self._uart = os.open(line.split()[1], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        with self._lock:
            self._open_pty()
        os.write(self._uart, b"\x00")  # the harness starts the MCU on the host's first byte
        self._thread = threading.Thread(target=self._run, name=f"simavr-{self.device}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the relay and the harness (which writes its EEPROM back); remove the link."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # a paused harness must run to see its SIGTERM
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        with self._lock:
            self._close_pty()
            if self._uart >= 0:
                os.close(self._uart)
                self._uart = -1

    @property
    def error(self) -> str:
        """Why the harness is gone ("" while it runs)."""
        if self._proc is None or self._proc.poll() is None:
            return ""
        return f"simmeter exited with {self._proc.returncode} (see {self._log_path})"

    # ----- the gateway-facing pty (lock held) -----------------------------------------------------------------

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # a byte pipe like a USB CDC port
        self._pty_path = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(master, False)
        self._master, self._connected = master, False
        tmp = self.link_path.with_name(f".{self.link_path.name}.new")  # hidden: a gateway's glob never sees it
        tmp.unlink(missing_ok=True)
        os.symlink(self._pty_path, tmp)
        os.replace(tmp, self.link_path)

    def _close_pty(self) -> None:
        if self._master is not None:
            os.close(self._master)
            self._master = None
        self._connected = False
        self._txbuf.clear()
        with contextlib.suppress(OSError):
            if os.readlink(self.link_path) == self._pty_path:
                self.link_path.unlink()

    def _check_peer(self) -> None:
        """POLLHUP on the master: nobody holds the slave open (the gateway closed the port or never opened it)."""
        if self._master is None:
            return
        poller = select.poll()
        poller.register(self._master, select.POLLIN)
        got = poller.poll(0)
        flags = got[0][1] if got else 0
        self._connected = not flags & (select.POLLHUP | select.POLLERR)
        if not self._connected:
            self._txbuf.clear()

    # ----- relay ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._check_peer()
                self._pace()
                poller = select.poll()
                poller.register(self._uart, select.POLLIN)
                master = self._master if self._connected else None
                if master is not None:
                    poller.register(master, select.POLLIN | (select.POLLOUT if self._txbuf else 0))
            for fd, revents in poller.poll(PEER_POLL_S * 1000):
                with self._lock:
                    if fd == self._uart and revents & select.POLLIN:
                        self._from_meter(_read(fd))
                    elif fd == master and master == self._master:
                        if revents & select.POLLIN and self._uart >= 0:
                            with contextlib.suppress(BlockingIOError, OSError):
                                os.write(self._uart, _read(fd))
                        if revents & select.POLLOUT:
                            self._flush()

    def _from_meter(self, data: bytes) -> None:
        for item in self._up.feed(data):
            if isinstance(item, frames.Hello) and item.boot_count != self._boot:
                # a HELLO leaves right after the reset: uptime 0 is now (to a few ms), which paces the boot
                self._boot, self._anchor = item.boot_count, (time.time(), 0)
            elif isinstance(item, frames.Reading) and not item.flags & frames.FLAG_RESENT:
                due = self._anchor[0] + (item.uptime_ms - self._anchor[1]) / 1000
                if due > time.time() and self._proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self._proc.pid, signal.SIGSTOP)
                    self._resume_at = due
        if self._master is not None and self._connected:
            self._txbuf += data
            self._flush()

    def _pace(self) -> None:
        if self._resume_at is not None and time.time() >= self._resume_at and self._proc is not None:
            self._resume_at = None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGCONT)

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


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EAGAIN, or EIO: the other side closed; the next poll says so
        return b""


def _copy(stream: IO[bytes], log: IO[bytes]) -> None:
    with log:
        for chunk in iter(lambda: stream.read1(4096), b""):  # type: ignore[attr-defined]
            log.write(chunk)
            log.flush()
