"""All meters of a chaos run behind one face: simulated meters (``sim``) and the real firmware (simavr).

The simulated meters run in this process, on one :class:`sim.runner.MeterRunner` thread at real speed (speed 1),
exactly as the gateway tests run them: their ground truth (:meth:`sim.meter.MeterModel.truth`) is then at hand
without a log file, and ``sim/`` needs no change. Each starts with a seeded register of 2-90 kWh and a boot
counter of a lived-in meter; a register near 0 would make the analytics take a step-back at a reset for a
register restarted from zero (``backend/store/registers.py``), which real meters months in service never show.

"Stop producing" at the end of the run is a per-meter cut-off: a meter is unplugged at a moment its queue is
empty, so everything it produced before the cut is in the gateway's durable queue and what it produces afterwards
never leaves it. The reconciliation then covers exactly the readings produced before the cut.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Protocol

from sim.firmware import FirmwareBuild
from sim.port import VirtualMeter
from sim.runner import MeterRunner, device_id_for

from .avrmeter import AvrMeter
from .truth import DROPPED, RESET, UNACKED, MeterRecord, Produced

REPORT_PERIOD_MS = 1000


class Meter(Protocol):
    """What the fault schedule does to a meter, whichever kind it is."""

    device: str
    firmware: bool

    def unplug(self) -> None: ...

    def replug(self) -> None: ...

    def reboot(self, *, step_back: bool, off_ms: int) -> str: ...

    def corrupt_next(self, n: int, direction: str) -> None: ...

    def drop_next(self, n: int, direction: str) -> None: ...


class SimMeter:
    """A simulated meter (:class:`sim.port.VirtualMeter`) with the chaos run's cut-off."""

    firmware = False

    def __init__(self, runner: MeterRunner, meter: VirtualMeter) -> None:
        self._runner = runner
        self._meter = meter
        self.device = meter.device
        self._cut: int | None = None

    def unplug(self) -> None:
        self._meter.unplug()

    def replug(self) -> None:
        self._meter.replug()

    def reboot(self, *, step_back: bool, off_ms: int) -> str:
        self._meter.reboot(off_ms, save_energy=not step_back)
        kind = "watchdog reset: register back to its last save" if step_back else "brown-out reset: register kept"
        return f"{kind}, dark {off_ms} ms first" if off_ms else kind

    def corrupt_next(self, n: int, direction: str) -> None:
        self._meter.corrupt_next(n, direction)

    def drop_next(self, n: int, direction: str) -> None:
        self._meter.drop_next(n, direction)

    def cut_if_idle(self) -> bool:
        """Unplug now if the meter's queue is empty (checked and done under the runner's lock, so no reading is
        produced in between); False while it holds unacknowledged readings."""
        with self._runner.lock:  # re-entrant: unplug() takes it again
            if self._cut is None:
                if self._meter.model.queue:
                    return False
                self._cut = len(self._meter.model.produced)
                self._meter.unplug()
        return True

    def cut_now(self) -> None:
        with self._runner.lock:
            if self._cut is None:
                self._cut = len(self._meter.model.produced)
                self._meter.unplug()

    def record(self) -> MeterRecord:
        truth = self._meter.truth()
        produced = truth.produced[: self._cut]
        keys = {(p.boot, p.seq) for p in produced}
        excused = {k: DROPPED for k in truth.dropped & keys}
        excused.update({k: RESET for k in truth.lost & keys})
        excused.update({k: UNACKED for k in set(truth.unacked) & keys})
        boots = len({p.boot for p in truth.produced})
        return MeterRecord(self.device, False, tuple(Produced(p.boot, p.seq, p.t_ms, p.frame) for p in produced),
                           excused, {}, len(truth.dropped), boots)

    def faults_applied(self) -> tuple[int, int]:
        s = self._meter.stats()
        return s.tx_corrupted + s.rx_corrupted, s.tx_dropped + s.rx_dropped


class Fleet:
    """``count`` meters on ptys under ``link_dir``: the last one the real firmware when ``firmware`` is given."""

    def __init__(self, count: int, seed: str, link_dir: Path, workdir: Path, firmware: FirmwareBuild | None) -> None:
        rng = random.Random(f"chaos/{seed}/fleet")
        self._seed = f"chaos/{seed}"
        self.runner = MeterRunner(speed=1.0, link_dir=link_dir, seed=self._seed)
        self._plan = [(device_id_for(self._seed, i), rng.randrange(2_000_000, 90_000_000), rng.randrange(0, 40))
                      for i in range(count - (1 if firmware else 0))]
        self.sims: list[SimMeter] = []
        self.avr: AvrMeter | None = None
        if firmware is not None:
            self.avr = AvrMeter(firmware, workdir, link_dir, device_id_for(f"{self._seed}/avr", 0),
                                energy_mwh=rng.randrange(2_000_000, 90_000_000), seed=self._seed)

    @property
    def devices(self) -> list[str]:
        """Every meter's id, known before :meth:`start` (the backend's sites file lists them)."""
        return [d for d, _, _ in self._plan] + ([self.avr.device] if self.avr else [])

    @property
    def meters(self) -> list[SimMeter | AvrMeter]:
        return [*self.sims, *([self.avr] if self.avr else [])]

    def start(self) -> None:
        """Power the meters on now: a simulated meter created earlier would catch up at once on its first turn,
        flooding its queue with readings nobody could hear."""
        for device, energy_mwh, boot_count in self._plan:
            vm = self.runner.add_meter(device, report_period_ms=REPORT_PERIOD_MS, energy_mwh=energy_mwh,
                                       boot_count=boot_count)
            self.sims.append(SimMeter(self.runner, vm))
        self.runner.start()
        if self.avr is not None:
            self.avr.start()

    def cut(self, timeout: float) -> float:
        """Stop every meter producing (see the module doc); returns the seconds it took. A meter whose queue does
        not empty within ``timeout`` is cut anyway (its unacknowledged readings are then excused as such)."""
        t0 = time.monotonic()
        pending = list(self.meters)
        while pending and time.monotonic() - t0 < timeout:
            pending = [m for m in pending if not m.cut_if_idle()]
            time.sleep(0.01)
        for m in pending:
            m.cut_now()
        self.runner.stop()
        return time.monotonic() - t0

    def records(self) -> list[MeterRecord]:
        return [m.record() for m in self.meters]

    def faults_applied(self) -> tuple[int, int]:
        """(frames corrupted, frames dropped) on every link, both directions."""
        pairs = [m.faults_applied() for m in self.meters]
        return sum(p[0] for p in pairs), sum(p[1] for p in pairs)

    def stop(self) -> None:
        self.runner.stop()
        if self.avr is not None:
            self.avr.stop()
