"""The real meter firmware (the AVR ELF that is flashed) in simavr, on a pty the gateway opens like any meter's.

The libsimavr harness (``firmware/sim/simmeter.c``, built with ``make -C firmware fw sim`` as tests/firmware does)
runs the unchanged ELF and bridges its UART to a pty of its own. A relay thread sits between that pty and a
:class:`sim.pty_port.PtyPort`, whose stable link ``<link_dir>/ttyAICSS-<device>`` is the one the gateway globs. The
relay exists for two reasons:

- **Real time.** The harness lets simulated time run free (about ten simulated seconds per wall second on the
  development machine, a whole core busy), so a 1 s report period would come out ten times a second. After each
  fresh READING the relay SIGSTOPs the harness until the wall clock has caught up with the reading's uptime
  (anchored at the boot's HELLO): the meter reports at its period, like the board, and costs a fraction of a core.
- **A port that can be closed.** Like :mod:`sim.port` (and a USB-serial adapter), what the firmware says while no
  one holds the port open is lost on the wire; its queue and the gateway's SYNC recover it. Writing into a pty
  nobody reads would otherwise fill the kernel buffer and stall the simulated MCU.

The harness synthesises one steady waveform (``--vrms --irms --phase``): the firmware measures it with its own
maths and calibration, which is what a CONFIG changes. Its EEPROM is a file in the meter's work folder, loaded at
start and written back at every reset and exit, so a restart is a power cycle.

The chaos bench's firmware meter (``bench/chaoslib/avrmeter.py``) is this one plus link faults and ground truth:
it overrides the hooks the relay calls with the lock held, marked as such below.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Final, NamedTuple, Self

from protocol import frames
from sim.pty_port import PtyPort

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
    """One firmware meter: the harness process (its EEPROM ``workdir/eeprom-<device>.bin``) and the relay thread.
    Public methods are thread-safe.

    The default waveform is a steady 564 W load at PF 0.91. ``kill_with_parent``: the harness gets SIGKILL when the
    thread that started it ends (``setpriv --pdeathsig``), so a run that dies uncleanly leaves no harness behind
    (a paced one may be stopped, and then never sees a SIGTERM)."""

    def __init__(self, build: FirmwareBuild, workdir: Path, link_dir: Path, device: str, *, vrms: float = 127.0,
                 irms: float = 4.9, phase_deg: float = 25.0, kill_with_parent: bool = False) -> None:  # fmt: skip
        self.device = device
        self._port = PtyPort(Path(link_dir), device)
        self.link_path = self._port.link_path
        self.eeprom = Path(workdir) / f"eeprom-{device}.bin"
        self._build = build
        self._waveform = ["--vrms", str(vrms), "--irms", str(irms), "--phase", str(phase_deg)]
        self._kill_with_parent = kill_with_parent
        self._log_path = Path(workdir) / f"simavr-{device}.log"
        self._lock = threading.RLock()  # re-entrant: a subclass may unplug() with it held
        self._up = frames.Decoder()  # the UART as the firmware wrote it
        self._proc: subprocess.Popen[bytes] | None = None
        self._uart = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._boot = 0
        self._anchor = (time.time(), 0)  # (wall s, uptime ms) of the boot's HELLO; the relay sees every HELLO
        self._resume_at: float | None = None

    @property
    def pty_path(self) -> str:
        with self._lock:
            return self._port.path

    @property
    def pid(self) -> int | None:
        """The harness's process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def error(self) -> str:
        """Why the harness is gone ("" while it runs)."""
        if self._proc is None or self._proc.poll() is None:
            return ""
        return f"simmeter exited with {self._proc.returncode} (see {self._log_path})"

    # ----- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> Self:
        log = self._log_path.open("ab")
        cmd = [str(self._build.harness), "-w", "-e", str(self.eeprom), "--device-id", self.device, *self._waveform,
               str(self._build.elf)]  # fmt: skip
        setpriv = shutil.which("setpriv") if self._kill_with_parent else None
        if setpriv:
            cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
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
            self._port.open()
        os.write(self._uart, b"\x00")  # the harness starts the MCU on the host's first byte
        self._thread = threading.Thread(target=self._run, name=f"simavr-{self.device}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the relay and the harness (which writes its EEPROM back); remove the link."""
        self._halt()
        with self._lock:
            self._port.close()
            if self._uart >= 0:
                os.close(self._uart)
                self._uart = -1

    def _halt(self) -> None:
        """Stop the relay, then the harness; the gateway-facing pty stays as it is."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a paused harness must run to see its SIGTERM
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    # ----- faults -----------------------------------------------------------------------------------------------

    def unplug(self) -> None:
        """Pull the USB cable: the gateway's port fails and the link disappears; the firmware keeps running."""
        with self._lock:
            self._port.close()

    def replug(self) -> None:
        """Plug it back: a new pty, the link re-pointed to it. No-op while plugged."""
        with self._lock:
            if not self._port.plugged:
                self._port.open()

    def reset(self) -> None:
        """Reset the MCU (SIGUSR1 to the harness); the EEPROM is kept."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGUSR1)

    # ----- relay ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._port.check_peer()
                self._pace()
                poller = select.poll()
                if self._uart >= 0:
                    poller.register(self._uart, select.POLLIN)
                master = self._port.master
                if master is not None and self._port.connected:
                    poller.register(master, select.POLLIN | (select.POLLOUT if self._port.txbuf else 0))
            for fd, revents in poller.poll(PEER_POLL_S * 1000):
                with self._lock:
                    if fd == self._uart and revents & select.POLLIN:
                        self._from_meter(_read(fd))
                    elif fd == self._uart:  # the harness exited (its pty hung up): nothing more will come
                        os.close(self._uart)
                        self._uart = -1
                    elif fd == master and master == self._port.master:
                        if revents & select.POLLIN:
                            self._from_gateway(_read(fd))
                        if revents & select.POLLOUT:
                            self._port.flush()

    def _from_meter(self, data: bytes) -> None:
        now = time.time()
        for item in self._up.feed(data):
            if isinstance(item, frames.Hello) and item.boot_count != self._boot:
                self._new_boot(item.boot_count)
            elif isinstance(item, frames.Reading) and not item.flags & frames.FLAG_RESENT:
                self._fresh(item, now)
            elif isinstance(item, frames.Status):
                self._status(item)
        if self._port.plugged and self._port.connected:
            self._port.txbuf += self._to_gateway(data)
            self._port.flush()

    def _from_gateway(self, data: bytes) -> None:
        data = self._to_meter(data)
        if data and self._uart >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._uart, data)

    def _pace(self) -> None:
        if self._resume_at is not None and time.time() >= self._resume_at and self._proc is not None:
            self._resume_at = None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGCONT)

    # ----- hooks (lock held) --------------------------------------------------------------------------------------

    def _new_boot(self, boot: int) -> None:
        """The firmware's HELLO of a new boot (``self._boot`` is still the old one)."""
        # a HELLO leaves right after the reset: uptime 0 is now (to a few ms), which paces the boot's first reading
        self._boot, self._anchor = boot, (time.time(), 0)

    def _fresh(self, reading: frames.Reading, now: float) -> None:
        """A READING the firmware sent for the first time, read off its UART at ``now`` (wall s)."""
        due = self._anchor[0] + (reading.uptime_ms - self._anchor[1]) / 1000
        if due > now and self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGSTOP)
            self._resume_at = due

    def _status(self, status: frames.Status) -> None:
        """A STATUS the firmware sent; nothing to do for the relay itself."""

    def _to_gateway(self, data: bytes) -> bytes:
        """The bytes the firmware wrote, as they reach the gateway (while someone holds the port open)."""
        return data

    def _to_meter(self, data: bytes) -> bytes:
        """The bytes the gateway wrote, as they reach the firmware."""
        return data


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
