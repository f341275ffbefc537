"""One meter's serial port: open by stable path, SYNC, read and decode, reopen with backoff.

A thin I/O shell around :class:`protocol.frames.Decoder`: each link runs one thread that blocks on the port and
posts what it decodes to the ingest thread's event queue. Writes (ACK, SYNC, CONFIG) come from the ingest thread
through :meth:`SerialLink.write`. Unplugging (EIO), a vanished path or any SerialException closes the port, posts
:class:`LinkDown` and reopens it with exponential backoff (tenacity) — a ``/dev/serial/by-id`` path comes back
when the meter is plugged in again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Literal

import serial
import tenacity

from gateway.errors import LinkError
from gateway.stats import Stats
from protocol import frames

log = logging.getLogger(__name__)

LinkState = Literal["connecting", "up", "down", "stopped"]


@dataclass(frozen=True, slots=True)
class LinkUp:
    link: SerialLink


@dataclass(frozen=True, slots=True)
class LinkDown:
    link: SerialLink


@dataclass(frozen=True, slots=True)
class Received:
    link: SerialLink
    items: list[frames.Frame | frames.FrameError]
    recv_ms: int


class SerialLink:
    """The thread that owns one port. ``state`` and ``last_error`` are read by the status page."""

    def __init__(
        self,
        port: str,
        events: SimpleQueue[object],
        stats: Stats,
        *,
        baudrate: int = 115200,
        reopen_min_s: float = 0.2,
        reopen_max_s: float = 5.0,
    ) -> None:
        self.port = port
        self.state: LinkState = "connecting"
        self.last_error = ""
        self.since = time.time()
        self.opens = 0
        self._events = events
        self._stats = stats
        self._baudrate = baudrate
        self._reopen = (reopen_min_s, reopen_max_s)
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._serial: serial.Serial | None = None
        self._decoder = frames.Decoder()
        self._thread = threading.Thread(target=self._run, name=f"link:{port}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def write(self, data: bytes) -> bool:
        """Send bytes to the meter; False (and counted) when the port is not open or the write failed."""
        with self._write_lock:  # the ingest thread writes while this link's thread may be closing the port
            ser = self._serial
            if ser is None:
                return False
            try:
                ser.write(data)
                return True
            except (serial.SerialException, OSError) as exc:
                self._stats.error("serial_write")
                log.warning("%s: write failed: %s", self.port, exc)
                return False

    def _set_state(self, state: LinkState, error: str = "") -> None:
        self.state = state
        self.since = time.time()
        if error:
            self.last_error = error

    def _open(self) -> serial.Serial:
        try:
            return serial.Serial(self.port, self._baudrate, timeout=0.25, write_timeout=2.0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._stats.error("serial_open")
            self._set_state("down", str(exc))
            raise LinkError(f"cannot open: {exc}", self.port) from exc

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _open_with_backoff(self) -> serial.Serial | None:
        lo, hi = self._reopen
        retrying = tenacity.Retrying(
            wait=tenacity.wait_exponential(multiplier=lo, min=lo, max=hi) + tenacity.wait_random(0, lo),
            retry=tenacity.retry_if_exception_type(LinkError),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._sleep,
            before_sleep=lambda rs: log.debug("%s: reopen attempt %d failed", self.port, rs.attempt_number),
            reraise=True,
        )
        try:
            return retrying(self._open)
        except LinkError:
            return None  # stopped while retrying

    def _run(self) -> None:
        while not self._stop.is_set():
            ser = self._open_with_backoff()
            if ser is None:
                break
            self._decoder.reset()  # a frame cut off by the unplug must not prefix the first frame after it
            with self._write_lock:
                self._serial = ser
            self.opens += 1
            self._set_state("up")
            self.last_error = ""
            log.info("%s: port open", self.port)
            self._events.put(LinkUp(self))
            # SYNC makes the meter say HELLO (we may have missed it) and resend what we have not ACKed; the leading
            # delimiter ends whatever partial frame its receiver holds, so the SYNC is not lost with it
            self.write(frames.DELIMITER + frames.encode(frames.Sync()))
            self._stats.inc("syncs_sent")
            reason = "stopped"
            try:
                self._read_loop(ser)
            except (serial.SerialException, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                self._stats.error("serial_io")
                log.warning("%s: link lost: %s", self.port, reason)
            except Exception as exc:  # a bug must not silence the port for good: close, reopen
                reason = f"internal error: {exc!r}"
                self._stats.error("internal")
                log.exception("%s: unexpected error, reopening the port", self.port)
            finally:
                with self._write_lock:
                    self._serial = None
                with contextlib.suppress(serial.SerialException, OSError):
                    ser.close()
                self._set_state("stopped" if self._stop.is_set() else "down", "" if reason == "stopped" else reason)
                self._events.put(LinkDown(self))
        self._set_state("stopped")

    def _read_loop(self, ser: serial.Serial) -> None:
        decoder = self._decoder
        while not self._stop.is_set():
            # whatever is buffered, or block for one byte; the port's read timeout brings us back to the stop check
            data = ser.read(ser.in_waiting or 1)
            if not data:
                continue
            items = decoder.feed(data)
            if items:
                self._events.put(Received(self, items, int(time.time() * 1000)))
