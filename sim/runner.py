"""Run N virtual meters in one background thread, with simulated time running ``speed`` times faster than wall time.

    with MeterRunner(speed=10, link_dir=tmp_path) as runner:
        meter = runner.add_meter(seed=1, report_period_ms=20)
        port = serial.Serial(str(meter.link_path))   # the gateway side
        ...
        meter.reboot()                               # fault injection, from any thread
        truth = meter.truth()                        # ground truth snapshot, from any thread

One thread serves every meter: it polls the pty masters, feeds what the gateway wrote into the models, advances the
models to the current simulated time and writes what they said. It sleeps until the earliest meter deadline or until
a pty is readable; fault-injection calls wake it through a pipe. A single lock guards all models, so a test can read
ground truth or inject a fault at any moment.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sim.loads import Household
from sim.meter import MeterModel
from sim.port import VirtualMeter
from sim.solar import solar_household

log = logging.getLogger(__name__)

DEVICE_PREFIX = "a1c55"
PEER_POLL_S = 0.02
"""How often (wall time) a port nobody has open is checked for a new reader."""


def device_id_for(seed: int | str, index: int) -> str:
    """A stable 16-hex-digit device id for meter ``index`` of a simulation seeded with ``seed``."""
    digest = hashlib.sha256(f"cds-sim/{seed}/{index}".encode()).hexdigest()
    return DEVICE_PREFIX + digest[: 16 - len(DEVICE_PREFIX)]


class MeterRunner:
    """Owns the meters, their ptys and the service thread. Start/stop it, or use it as a context manager.

    ``speed``: simulated seconds per wall second. ``start_ms``: simulated Unix time (ms) at start, default now.
    ``link_dir``: where the stable ``ttyAICSS-<device>`` links go (default: a temporary directory, removed on stop).
    """

    def __init__(
        self,
        *,
        speed: float = 1.0,
        start_ms: int | None = None,
        link_dir: str | Path | None = None,
        seed: int | str = 0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = float(speed)
        self.seed = seed
        self.lock = threading.RLock()
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        if link_dir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="cds-sim-")
            link_dir = self._tmpdir.name
        self.link_dir = Path(link_dir)
        self.link_dir.mkdir(parents=True, exist_ok=True)
        self._meters: list[VirtualMeter] = []
        self._sim0 = float(start_ms if start_ms is not None else time.time() * 1000)
        self._mono0 = time.monotonic()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        """The exception that stopped the service thread, if any."""

    # ----- clock ---------------------------------------------------------------------------------------------

    def now_ms(self) -> int:
        """Current simulated Unix time, ms."""
        return int(self._sim0 + (time.monotonic() - self._mono0) * 1000 * self.speed)

    def sim_seconds(self, wall_seconds: float) -> float:
        return wall_seconds * self.speed

    # ----- meters --------------------------------------------------------------------------------------------

    def add_meter(
        self,
        device_id: str | None = None,
        *,
        seed: int | str | None = None,
        nominal_v: int = 127,
        report_period_ms: int = 1000,
        pv_kwp: float = 0.0,
        **model_kwargs: Any,
    ) -> VirtualMeter:
        """Create a meter (powered on now) on a new pty. ``seed`` picks its household (default: derived from the
        runner's seed and the meter's index); ``pv_kwp`` > 0 puts a PV array of that size behind the meter
        (:func:`sim.solar.solar_household`). Other keyword arguments go to :class:`sim.meter.MeterModel`
        (e.g. ``bidirectional=False`` for a firmware 1.0 meter)."""
        with self.lock:
            index = len(self._meters)
            meter_seed = seed if seed is not None else f"{self.seed}/{index}"
            device = device_id or device_id_for(self.seed, index)
            model = MeterModel(
                device,
                start_ms=self.now_ms(),
                load=solar_household(meter_seed, nominal_v, pv_kwp) if pv_kwp > 0 else Household(meter_seed, nominal_v),
                report_period_ms=report_period_ms,
                **model_kwargs,
            )
            meter = VirtualMeter(self, model, self.link_dir, meter_seed)
            self._meters.append(meter)
        self.wake()
        return meter

    @property
    def meters(self) -> list[VirtualMeter]:
        with self.lock:
            return list(self._meters)

    # ----- thread --------------------------------------------------------------------------------------------

    def start(self) -> MeterRunner:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cds-sim-meters", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, close every pty and remove the links. Idempotent."""
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self.lock:
            for meter in self._meters:
                meter.close()
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> MeterRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wake(self) -> None:
        """Make the service thread re-evaluate now (after a fault injection or a new meter)."""
        with self.lock, contextlib.suppress(OSError):  # a full pipe: already woken
            if self._wake_w >= 0:  # under the lock, so a stopped runner's fd number is never reused by mistake
                os.write(self._wake_w, b"w")

    def wait_until(self, predicate: Any, timeout: float = 10.0, interval: float = 0.005) -> bool:
        """Poll ``predicate()`` until it is true or ``timeout`` wall seconds pass; returns its last value."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline or self.error is not None:
                return bool(predicate())
            time.sleep(interval)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._turn()
        except BaseException as exc:  # surfaced to tests through .error; the links are closed by stop()
            self.error = exc
            log.exception("meter simulator thread failed")

    def _turn(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        by_fd: dict[int, VirtualMeter] = {}
        with self.lock:
            now = self.now_ms()
            deadline = now + 3_600_000
            idle_port = False
            for meter in self._meters:
                due, fd, want_write = meter._service(now)
                deadline = min(deadline, due)
                if fd is None:
                    idle_port = idle_port or meter.plugged
                    continue
                by_fd[fd] = meter
                poller.register(fd, select.POLLIN | (select.POLLOUT if want_write else 0))
        wait_s = max(0.0, (deadline - self.now_ms()) / 1000 / self.speed)
        if idle_port:
            wait_s = min(wait_s, PEER_POLL_S)
        events = poller.poll(min(wait_s, 1.0) * 1000)
        with self.lock:
            for fd, revents in events:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                ready = by_fd.get(fd)
                if ready is not None:
                    ready._on_ready(revents)
