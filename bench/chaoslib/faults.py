"""The seeded fault schedule of a chaos run, its execution and its log.

:func:`plan` spreads faults over the run from a seed alone, so ``--seed`` reproduces the schedule (the moments a
process dies relative to its work still vary with the machine's timing). Every kind comes at least once:

=================  ===========================================================================================
``gateway-kill9``  the gateway SIGKILLed, restarted after the hold (its queue file must carry everything)
``backend-kill9``  one backend replica SIGKILLed, restarted after the hold (the other adopts its session after
                   10 s; holds range past that on purpose)
``broker-stop``    Mosquitto stopped gracefully (SIGTERM: it saves its persistence), started after the hold
``broker-kill9``   Mosquitto SIGKILLed: it restarts from its last autosave and forgets what it PUBACKed since
``broker-kill9-    a replica SIGKILLed, 3 s later Mosquitto too: the readings it PUBACKed and queued for the dead
queued``           replica since its last autosave vanish, so only the gateway's re-send after its receipt
                   timeout stores them (a plain broker kill rarely loses anything a live replica had not taken)
``influx-kill9``   InfluxDB SIGKILLed: writes fail, the replicas hold their MQTT acks and retry
``meter-unplug``   a meter's pty closed for the hold (up to 24 s at one reading a second: past its 16-reading
                   queue, so the meter drops its oldest and says so in STATUS)
``meter-reboot``   a brown-out reset, sometimes dark for a while first: boot +1, RAM queue lost, register kept
``meter-watchdog`` a reset that steps the register back to its last once-a-minute save (the firmware's only
                   kind of reset, so the firmware meter gets one of these)
``frames-corrupt`` one bit flipped in the next 1-3 frames, meter to gateway or gateway to meter
``frames-drop``    the next 1-3 frames lost, either direction
=================  ===========================================================================================

Process faults are serialised (one outage at a time, each in its own slot, held shorter than the slot) and run on
one thread that lives until the end of the run, because every restarted server dies with the thread that started
it (``setpriv --pdeathsig``, see devstack/processes.py). Meter faults may overlap anything but an unplug of the
same meter. The last part of the run (``tail``) is quiet, so the chain has recovered before the run stops
producing.
"""

from __future__ import annotations

import functools
import heapq
import random
import threading
import time
from collections.abc import Callable
from typing import Final, NamedTuple

from devstack.processes import ManagedProcess, ServiceError

from .fleet import Meter

PROCESS_KINDS: Final = ("gateway-kill9", "backend-kill9", "broker-stop", "broker-kill9", "broker-kill9-queued",
                         "influx-kill9")
METER_KINDS: Final = ("meter-unplug", "meter-reboot", "meter-watchdog", "frames-corrupt", "frames-drop")
KINDS: Final = PROCESS_KINDS + METER_KINDS
HOLD_S: Final = {
    "gateway-kill9": (1.0, 6.0), "backend-kill9": (2.0, 20.0), "broker-stop": (2.0, 10.0),
    "broker-kill9": (1.0, 6.0), "broker-kill9-queued": (1.0, 4.0), "influx-kill9": (2.0, 12.0),
    "meter-unplug": (3.0, 24.0),
}  # fmt: skip
"""Outage lengths per kind, seconds (uniform)."""
MORE_PROCESS_FAULTS: Final = ("gateway-kill9", "backend-kill9", "influx-kill9", "broker-stop", "gateway-kill9",
                               "backend-kill9", "broker-kill9", "gateway-kill9", "influx-kill9",
                               "broker-kill9-queued")
"""The rotation of process faults beyond one of each: the gateway (a Raspberry Pi) dies most often in the field,
the broker least."""
QUEUE_S: Final = 3.0
"""broker-kill9-queued: seconds of readings the broker queues for the dead replica before it is killed too."""
START_S: Final = 10.0
"""No fault before every meter has been seen by the gateway."""


def quiet_tail(duration: float) -> float:
    """Seconds at the end of the run without faults: the last outage's recovery (re-sends after the 15 s receipt
    timeout, a replica's restart) must be over before the run stops producing."""
    return max(30.0, 0.2 * duration)


class Fault(NamedTuple):
    at_s: float
    """Planned start, seconds after the run began."""
    kind: str
    target: str
    """``gateway``, ``backend-N``, ``mosquitto``, ``influxd`` or a device id (broker-kill9-queued: the replica)."""
    hold_s: float = 0.0
    """Outage or unplug length; 0 for instantaneous faults."""
    n: int = 0
    """Frames to corrupt or drop; for a meter-reboot, milliseconds dark before it boots."""
    direction: str = "tx"
    """Frames: ``tx`` meter -> gateway, ``rx`` gateway -> meter."""


def plan(seed: str, duration: float, devices: list[str], firmware: str | None, replicas: int) -> list[Fault]:
    """The schedule for a run of ``duration`` seconds, sorted by time."""
    rng = random.Random(f"chaos/{seed}/faults")
    lo, hi = START_S, max(START_S + 1.0, duration - quiet_tail(duration))
    window = hi - lo
    # process outages: every kind once, then more in proportion to the run (about one per 45 s), in a fixed
    # rotation so a long run gets a balanced mix rather than whatever a random draw favours
    more = max(0, round(window / 45) - len(PROCESS_KINDS))
    kinds = [*PROCESS_KINDS, *(MORE_PROCESS_FAULTS[i % len(MORE_PROCESS_FAULTS)] for i in range(more))]
    rng.shuffle(kinds)
    slot = window / len(kinds)
    faults = []
    for i, kind in enumerate(kinds):
        at = lo + i * slot + rng.uniform(0, 0.3) * slot
        a, b = HOLD_S[kind]
        hold = min(rng.uniform(a, b), 0.5 * slot)
        backend = f"backend-{rng.randint(1, replicas)}"
        target = {"gateway-kill9": "gateway", "backend-kill9": backend, "broker-kill9-queued": backend,
                  "influx-kill9": "influxd"}.get(kind, "mosquitto")
        faults.append(Fault(round(at, 1), kind, target, round(hold, 1)))
    # meter faults: every kind once on a simulated meter (corrupt frames towards the gateway, drop frames towards
    # the meter, so both codecs see a fault), the firmware unplugged and reset once, then about one per 30 s
    sims = [d for d in devices if d != firmware] or devices
    directions = {"frames-corrupt": "tx", "frames-drop": "rx"}
    wanted: list[tuple[str, list[str], str | None]] = [(k, sims, directions.get(k)) for k in METER_KINDS]
    if firmware is not None:
        wanted += [("meter-unplug", [firmware], None), ("meter-watchdog", [firmware], None)]
    extra = rng.choices(METER_KINDS, k=max(0, round(window / 30) - len(wanted)))
    wanted += [(k, devices, None) for k in extra]
    unplugged: dict[str, list[tuple[float, float]]] = {}
    for kind, targets, direction in wanted:
        for _ in range(20):  # an unplug never overlaps another unplug of the same meter
            at = rng.uniform(lo, hi - 5.0)
            target = rng.choice(targets)
            hold = rng.uniform(*HOLD_S[kind]) if kind == "meter-unplug" else 0.0
            hold = min(hold, hi - at)
            busy = unplugged.get(target, [])
            if kind != "meter-unplug" or all(at + hold < s or at > e for s, e in busy):
                break
        if kind == "meter-unplug":
            unplugged.setdefault(target, []).append((at, at + hold))
        n = 0
        if kind == "meter-reboot":
            n = rng.choice((0, 0, rng.randint(500, 3000)))
        elif kind.startswith("frames-"):
            n = rng.randint(1, 3)
        faults.append(Fault(round(at, 1), kind, target, round(hold, 1), n, direction or rng.choice(("tx", "rx"))))
    return sorted(faults)


class Logged(NamedTuple):
    kind: str
    target: str
    start_s: float
    end_s: float
    detail: str


class FaultRunner:
    """Executes a plan against the running processes and meters; :attr:`log` records each fault as it ends."""

    def __init__(self, processes: dict[str, ManagedProcess], *, before_gateway_kill: Callable[[], object],
                 echo: Callable[[str], None]) -> None:
        self._processes = processes
        self._meters: dict[str, Meter] = {}
        self._before_gateway_kill = before_gateway_kill
        self._echo = echo
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._release = threading.Event()
        self._pending: list[tuple[float, int, Callable[[], None]]] = []  # meter actions due (heap)
        self._seq = 0
        self.log: list[Logged] = []
        self.errors: list[str] = []

    def now_s(self) -> float:
        return time.monotonic() - self._t0

    def start(self, faults: list[Fault], meters: list[Meter]) -> None:
        """Run the process faults on their own thread; queue the meter faults for :meth:`tick`."""
        self._t0 = time.monotonic()
        self._meters = {m.device: m for m in meters}
        for f in faults:
            if f.kind in METER_KINDS:
                self._at(f.at_s, functools.partial(self._meter_fault, f))
        threading.Thread(target=self._process_faults, name="chaos-faults",
                         args=([f for f in faults if f.kind in PROCESS_KINDS],), daemon=True).start()

    def tick(self) -> None:
        """Run the meter actions that are due (call it often from the main thread)."""
        while True:
            with self._lock:
                if not self._pending or self._pending[0][0] > self.now_s():
                    return
                _, _, action = heapq.heappop(self._pending)
            action()

    def wait_processes(self, timeout: float) -> bool:
        """True once every process fault is over (the process is back and answers)."""
        return self._done.wait(timeout)

    def release(self) -> None:
        """End the fault thread (after the processes it restarted were stopped)."""
        self._release.set()

    def _at(self, t: float, action: Callable[[], None]) -> None:
        with self._lock:
            self._seq += 1
            heapq.heappush(self._pending, (t, self._seq, action))

    def _record(self, kind: str, target: str, start: float, detail: str) -> None:
        entry = Logged(kind, target, round(start, 1), round(self.now_s(), 1), detail)
        with self._lock:
            self.log.append(entry)
        self._echo(f"[{entry.start_s:7.1f} s] {kind:<19} {target:<16} {detail}")

    # ----- processes ---------------------------------------------------------------------------------------

    def _process_faults(self, faults: list[Fault]) -> None:
        for f in faults:
            delay = f.at_s - self.now_s()
            if delay > 0:
                time.sleep(delay)
            self._process_fault(f)
        self._done.set()
        self._release.wait()  # the servers restarted here die with this thread: keep it until the end

    def _process_fault(self, f: Fault) -> None:
        victims = [self._processes[f.target]]
        if f.kind == "broker-kill9-queued":
            victims.append(self._processes["mosquitto"])
        start = self.now_s()
        if f.kind == "gateway-kill9":
            self._before_gateway_kill()
        for i, proc in enumerate(victims):
            if i:
                time.sleep(QUEUE_S)
            if f.kind == "broker-stop":
                proc.stop()
            else:
                proc.kill()
        down = self.now_s()
        time.sleep(f.hold_s)
        restart = self.now_s()
        for proc in reversed(victims):
            for attempt in range(3):
                try:
                    proc.start(timeout=90)
                    break
                except ServiceError as exc:
                    self.errors.append(f"{f.kind} {proc.name}: restart attempt {attempt + 1} failed: {exc}")
        how = "stopped (SIGTERM)" if f.kind == "broker-stop" else "SIGKILL"
        if len(victims) > 1:
            how = f"SIGKILL, {QUEUE_S:g} s later mosquitto SIGKILL"
        self._record(f.kind, f.target, start, f"{how} in {down - start:.1f} s, down {restart - start:.1f} s, "
                                              f"answering again after {self.now_s() - restart:.1f} s")

    # ----- meters -------------------------------------------------------------------------------------------

    def _meter_fault(self, f: Fault) -> None:
        meter = self._meters[f.target]
        start = self.now_s()
        if f.kind == "meter-unplug":
            meter.unplug()
            self._at(start + f.hold_s, lambda: self._replug(meter, f, start))
            return
        if f.kind in ("meter-reboot", "meter-watchdog"):
            detail = meter.reboot(step_back=f.kind == "meter-watchdog", off_ms=f.n)
        elif f.kind == "frames-corrupt":
            meter.corrupt_next(f.n, f.direction)
            detail = f"{f.n} frame(s) {'meter -> gateway' if f.direction == 'tx' else 'gateway -> meter'}"
        else:
            meter.drop_next(f.n, f.direction)
            detail = f"{f.n} frame(s) {'meter -> gateway' if f.direction == 'tx' else 'gateway -> meter'}"
        self._record(f.kind, f.target, start, detail)

    def _replug(self, meter: Meter, f: Fault, start: float) -> None:
        meter.replug()
        self._record(f.kind, f.target, start, f"pty closed for {self.now_s() - start:.1f} s, then replugged")
