"""Sans-IO model of one AICSS meter: the firmware's protocol state machine (docs/protocol.md, sections 2 and 3).

Time goes in, bytes come out: :meth:`MeterModel.advance` moves the meter to a simulated instant (Unix ms) and
returns what it wrote on its UART by then; :meth:`MeterModel.receive` hands it bytes from the gateway. Nothing here
sleeps, opens a port or reads a clock, so the tests drive it through hours of simulated time in milliseconds, and
``sim.runner`` binds it to a pseudo-terminal.

The model also records ground truth: every reading it produced, which ones it discarded from a full queue or lost
with a reset before they were acknowledged, and how far each boot was acknowledged. Downstream tests compare what
arrived at the gateway, the broker or the database with that.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, NamedTuple

import msgspec

from gateway import frames
from sim.loads import Household, Sample

FW_VERSION: Final = (1, 0, 0)
HW_REV: Final = 1
STATUS_INTERVAL_MS: Final = 10_000
RESEND_MIN_MS: Final = 2_000
QUEUE_CAPACITY: Final = 16
SAMPLE_RATE_HZ: Final = 4_800
FACTORY_V_GAIN: Final = 250_000
"""Microvolts of mains per ADC count (the board's ZMPT101B divider); the simulated hardware's true scale."""
FACTORY_I_GAIN: Final = 97_700
"""Microamperes per ADC count (SCT-013-000, 100 A: 33 ohm burden)."""
I_RANGE_A: Final = 100.0
"""RMS current above which the current channel clips."""
U32: Final = 0xFFFFFFFF
RX_ERRORS_MAX: Final = 0xFFFF

CONFIG_PERIOD_RANGE: Final = (250, 3_600_000)
CONFIG_GAIN_RANGE: Final = (1, 10_000_000)
CONFIG_PHASE_RANGE: Final = (-1000, 1000)


def _whole_ms(t: float) -> int:
    """Milliseconds elapsed, as the firmware's counter shows them (ignoring float dust like 999.9999999)."""
    return math.floor(t + 1e-6)


class ProducedReading(NamedTuple):
    """Ground truth for one reading as first sent (without RESENT)."""

    boot: int
    seq: int
    t_ms: int
    """Simulated Unix time (ms) at the end of the measuring window."""
    frame: frames.Reading


class GroundTruth(NamedTuple):
    """A snapshot of what one meter really did, for checking delivery downstream.

    Keys are ``(boot, seq)``. A correct chain delivers every produced reading exactly once, except those in
    :meth:`may_miss`: discarded from a full queue, lost in RAM by a reset, or still unacknowledged in the queue.
    Every reading at or below ``acked[boot]`` was acknowledged: the gateway claimed it durable, or declared it
    dropped at the meter after a STATUS.
    """

    device: str
    boot_count: int
    produced: tuple[ProducedReading, ...]
    dropped: frozenset[tuple[int, int]]
    lost: frozenset[tuple[int, int]]
    unacked: tuple[tuple[int, int], ...]
    acked: dict[int, int]
    energy_mwh: int
    rx_errors: int

    def keys(self) -> set[tuple[int, int]]:
        return {(r.boot, r.seq) for r in self.produced}

    def may_miss(self) -> set[tuple[int, int]]:
        """Readings a correct gateway may legitimately never deliver."""
        return set(self.dropped) | set(self.lost) | set(self.unacked)

    def must_have(self) -> set[tuple[int, int]]:
        """Readings the gateway acknowledged, except those the meter had discarded (a STATUS told the gateway to
        move its ACK past them): the gateway must hold these durably."""
        return {
            (r.boot, r.seq) for r in self.produced if r.seq <= self.acked.get(r.boot, 0)
        } - self.dropped


class Calibration(NamedTuple):
    v_gain: int = FACTORY_V_GAIN
    i_gain: int = FACTORY_I_GAIN
    phase_cdeg: int = 0


class MeterModel:
    """The firmware's protocol state machine plus a measuring front end fed by a :class:`Household`.

    ``device_id`` is 8 bytes or 16 hex digits. ``start_ms`` is the simulated Unix time of power-on; the first call
    to :meth:`advance` returns the boot output (0x00, HELLO, STATUS). ``boot_count`` and ``energy_mwh`` are the
    EEPROM contents before that power-on (the first boot reports ``boot_count + 1``). ``report_period_ms`` may be
    below the protocol's 250 ms minimum for tests (CONFIG still enforces the range). ``integration_step_ms`` is how
    finely the load is sampled inside a window; the energy register integrates those samples.
    ``uptime_start_ms`` is the uptime counter's value at reset (the firmware's is 0; a test of the 49.7-day wrap
    starts near 2^32). ``drift_ppm``: the meter's crystal error. ``record_truth=False`` keeps no per-reading
    history (long demo runs).
    """

    def __init__(
        self,
        device_id: bytes | str,
        *,
        start_ms: int,
        load: Household | None = None,
        seed: int | str = 0,
        nominal_v: int = 127,
        report_period_ms: int = 1000,
        queue_capacity: int = QUEUE_CAPACITY,
        boot_count: int = 0,
        energy_mwh: int = 0,
        integration_step_ms: int = 200,
        resend_min_ms: int = RESEND_MIN_MS,
        status_interval_ms: int = STATUS_INTERVAL_MS,
        drift_ppm: float = 0.0,
        uptime_start_ms: int = 0,
        calibration: Calibration | None = None,
        uncalibrated: bool = False,
        record_truth: bool = True,
    ) -> None:
        self.device_id = bytes.fromhex(device_id) if isinstance(device_id, str) else bytes(device_id)
        if len(self.device_id) != 8:
            raise ValueError("device_id must be 8 bytes (16 hex digits)")
        if report_period_ms < 1 or queue_capacity < 1 or integration_step_ms < 1:
            raise ValueError("report period, queue capacity and integration step must be positive")
        self.load = load if load is not None else Household(seed, nominal_v)
        self.nominal_v = self.load.nominal_v
        self.queue_capacity = queue_capacity
        self.integration_step_ms = integration_step_ms
        self.resend_min_ms = resend_min_ms
        self.status_interval_ms = status_interval_ms
        self.record_truth = record_truth
        # "EEPROM": survives reboots
        self.boot_count = boot_count
        self.report_period_ms = report_period_ms
        self.calibration = calibration if calibration is not None else Calibration()
        self.uncalibrated = uncalibrated
        self._stored_config = (report_period_ms, self.calibration, uncalibrated)
        self._energy_uj = energy_mwh * 3_600_000  # register in microjoules; the mWh value is floor(/3.6e6)
        self.storage_fails = False
        # environment
        self.mains_on = True
        self._mains_before = True
        self._mains_since = float(start_ms)
        self._drift_rate = 1 + drift_ppm * 1e-6
        self.uptime_start_ms = uptime_start_ms
        # ground truth
        self.produced: list[ProducedReading] = []
        self.dropped_keys: set[tuple[int, int]] = set()
        self.lost_keys: set[tuple[int, int]] = set()
        self.acked: dict[int, int] = {}
        self.produced_count = 0
        self.dropped_total = 0
        self.ignored_acks = 0
        self.now_ms = start_ms
        self._out: list[bytes] = []
        self._off_until: int | None = None
        self._power_on(start_ms)

    # ----- clock -----------------------------------------------------------------------------------------------

    def _uptime(self, t_ms: float) -> float:
        return self._up_anchor + (t_ms - self._t_anchor) * self._drift_rate

    def _true_ms(self, uptime: float) -> float:
        return self._t_anchor + (uptime - self._up_anchor) / self._drift_rate

    def set_drift_ppm(self, ppm: float, now_ms: int) -> None:
        """From ``now_ms`` on, the meter's crystal runs ``ppm`` parts per million fast (negative: slow)."""
        self._run_until(now_ms)
        if self._off_until is None:
            self._up_anchor, self._t_anchor = self._uptime(now_ms), float(now_ms)
        self._drift_rate = 1 + ppm * 1e-6

    @property
    def uptime_ms(self) -> int:
        """The meter's uptime counter now (wraps at 2^32 on the wire)."""
        return _whole_ms(self._uptime(self.now_ms)) & U32

    # ----- boot --------------------------------------------------------------------------------------------------

    def _power_on(self, t_ms: int) -> None:
        self.boot_count = (self.boot_count + 1) & U32
        self.report_period_ms, self.calibration, self.uncalibrated = self._stored_config
        self._t_anchor, self._up_anchor = float(t_ms), float(self.uptime_start_ms)
        self.next_seq = 1
        self.queue: deque[frames.Reading] = deque()
        self.dropped = 0
        self.rx_errors = 0
        self._decoder = frames.Decoder()
        self._energy_uj -= self._energy_uj % 3_600_000  # the sub-mWh remainder lived in RAM
        self._window_start = self._up_anchor
        self._window_len = self.report_period_ms  # a new period from CONFIG applies from the next window on
        self._next_status = self._up_anchor + self.status_interval_ms
        self._rto_start = self._up_anchor
        self._hello(resync=True)
        self._status()

    def reboot(self, now_ms: int, off_ms: int = 0) -> None:
        """Reset (watchdog, brown-out, power cycle): the window in progress is accounted into the register, the
        RAM queue is lost (recorded as lost), ``boot_count`` +1, ``seq`` restarts at 1. With ``off_ms`` > 0 the
        meter stays dark (measures and says nothing) for that long before it boots. Like every command that is
        not I/O, the output it causes is collected by the next :meth:`advance`."""
        self._run_until(now_ms)
        if self._off_until is not None:
            return
        self._close_window(float(now_ms), partial=True)
        self.lost_keys.update((self.boot_count, r.seq) for r in self.queue)
        if off_ms > 0:
            self._off_until = now_ms + off_ms
            return
        self._power_on(now_ms)

    # ----- time --------------------------------------------------------------------------------------------------

    def next_deadline_ms(self) -> int:
        """The simulated time of the meter's next spontaneous output (for a runner's sleep)."""
        if self._off_until is not None:
            return self._off_until
        up = min(self._window_start + self._window_len, self._next_status)
        if self.queue:
            up = min(up, self._rto_start + self._rto())
        return math.ceil(self._true_ms(up))

    def advance(self, now_ms: int) -> bytes:
        """Run the meter up to simulated Unix time ``now_ms``; return the bytes it sent meanwhile."""
        return b"".join(self.advance_frames(now_ms))

    def advance_frames(self, now_ms: int) -> list[bytes]:
        """Like :meth:`advance`, one item per frame (each ends in 0x00; a lone b"\\x00" is the resync byte)."""
        self._run_until(now_ms)
        return self._drain()

    def _run_until(self, now_ms: int) -> None:
        if now_ms < self.now_ms:
            now_ms = self.now_ms  # time never goes back
        if self._off_until is not None:
            if now_ms < self._off_until:
                self.now_ms = now_ms
                return
            boot_at = self._off_until
            self._off_until = None
            self._power_on(boot_at)
        while True:
            window_end = self._window_start + self._window_len
            events = [(window_end, 0), (self._next_status, 1)]
            if self.queue:
                events.append((self._rto_start + self._rto(), 2))
            up, what = min(events)
            if self._true_ms(up) > now_ms:
                break
            if what == 0:
                self._close_window(self._true_ms(up), partial=False)
            elif what == 1:
                self._status()
                self._next_status = up + self.status_interval_ms
            else:
                self._resend_all()
                self._status()
                self._rto_start = up
        self.now_ms = now_ms

    def _rto(self) -> int:
        return max(self.resend_min_ms, 2 * self.report_period_ms)

    # ----- measuring ---------------------------------------------------------------------------------------------

    def _measure(self, t_a: float, t_b: float) -> tuple[Sample, float]:
        """Window average over true times [t_a, t_b] ms (midpoint rule) and the energy in microjoules."""
        span_up = (t_b - t_a) * self._drift_rate
        n = max(1, math.ceil(span_up / self.integration_step_ms))
        dt_true = (t_b - t_a) / n
        dt_up_s = span_up / n / 1000
        sv2 = si2 = sp = sf = 0.0
        energy_j = 0.0
        on = 0
        for k in range(n):
            t = t_a + (k + 0.5) * dt_true
            if self.mains_on if t >= self._mains_since else self._mains_before:
                on += 1
                smp = self.load.sample(t / 1000)
                sv2 += smp.vrms * smp.vrms
                si2 += smp.irms * smp.irms
                sp += smp.p
                sf += smp.freq
                energy_j += max(smp.p, 0.0) * dt_up_s  # the firmware integrates on its own clock
        if not on:  # supply off, meter on USB power: noise on the voltage channel only
            return Sample(0.4, 0.0, 0.0, 0.0, 0.0, 0.0), 0.0
        vrms, irms = math.sqrt(sv2 / n), math.sqrt(si2 / n)
        return Sample(vrms, irms, sp / n, vrms * irms, 0.0, sf / on), energy_j * 1e6

    def _close_window(self, t_end: float, *, partial: bool) -> None:
        t_start = self._true_ms(self._window_start)
        up_end = self._uptime(t_end)
        if t_end > t_start:
            smp, energy_uj = self._measure(t_start, t_end)
        else:
            smp, energy_uj = Sample(0.0, 0.0, 0.0, 0.0, 0.0, 0.0), 0.0
        # what a miscalibrated meter reports: true value x (gain in use / the hardware's true gain)
        kv = self.calibration.v_gain / FACTORY_V_GAIN
        ki = self.calibration.i_gain / FACTORY_I_GAIN
        self._energy_uj += round(energy_uj * kv * ki)
        self._window_start = up_end
        self._window_len = self.report_period_ms
        if partial:
            return
        vrms, irms, p = smp.vrms * kv, smp.irms * ki, smp.p * kv * ki
        s = vrms * irms
        flags = 0
        if self.next_seq == 1:
            flags |= frames.FLAG_FIRST_AFTER_BOOT
        if self.uncalibrated:
            flags |= frames.FLAG_UNCALIBRATED
        if smp.vrms < 0.1 * self.nominal_v:
            flags |= frames.FLAG_NO_SIGNAL
        if smp.vrms > 1.5 * self.nominal_v:
            flags |= frames.FLAG_V_CLIP
        if smp.irms > I_RANGE_A:
            flags |= frames.FLAG_I_CLIP
        no_signal = bool(flags & frames.FLAG_NO_SIGNAL)
        pf = 0 if no_signal or s <= 0 else max(-1000, min(1000, round(p / s * 1000)))
        reading = frames.Reading(
            seq=self.next_seq,
            uptime_ms=_whole_ms(up_end) & U32,
            vrms_mv=min(U32, round(vrms * 1000)),
            irms_ma=min(U32, round(irms * 1000)),
            p_dw=round(p * 10),
            s_dva=min(U32, round(s * 10)),
            pf_milli=pf,
            freq_mhz=0 if no_signal else round(smp.freq * 1000),
            energy_mwh=self.energy_mwh,
            flags=flags,
        )
        self.next_seq = (self.next_seq + 1) & U32 or 1
        self.produced_count += 1
        if self.record_truth:
            self.produced.append(ProducedReading(self.boot_count, reading.seq, round(t_end), reading))
        if not self.queue:
            self._rto_start = up_end
        if len(self.queue) >= self.queue_capacity:
            old = self.queue.popleft()
            self.dropped += 1
            self.dropped_total += 1
            self.dropped_keys.add((self.boot_count, old.seq))
        self.queue.append(reading)
        self._send(reading)

    @property
    def energy_mwh(self) -> int:
        """The cumulative energy register, mWh."""
        return self._energy_uj // 3_600_000

    # ----- output ------------------------------------------------------------------------------------------------

    def _send(self, frame: frames.Frame) -> None:
        self._out.append(frames.encode(frame))

    def _drain(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def _hello(self, *, resync: bool) -> None:
        if resync:
            self._out.append(frames.DELIMITER)
        fw = FW_VERSION
        self._send(
            frames.Hello(self.device_id, fw[0], fw[1], fw[2], HW_REV, self.boot_count, self.report_period_ms)
        )

    def truth(self) -> GroundTruth:
        """A snapshot of the ground truth (copies; safe to keep)."""
        return GroundTruth(
            device=self.device_id.hex(),
            boot_count=self.boot_count,
            produced=tuple(self.produced),
            dropped=frozenset(self.dropped_keys),
            lost=frozenset(self.lost_keys),
            unacked=tuple((self.boot_count, r.seq) for r in self.queue) if self._off_until is None else (),
            acked=dict(self.acked),
            energy_mwh=self.energy_mwh,
            rx_errors=self.rx_errors,
        )

    def status(self) -> frames.Status:
        """The STATUS the meter would send now."""
        oldest = self.queue[0].seq if self.queue else self.next_seq
        return frames.Status(
            oldest_seq=oldest,
            next_seq=self.next_seq,
            queued=len(self.queue),
            dropped=self.dropped & U32,
            rx_errors=self.rx_errors,
            sample_rate_hz=SAMPLE_RATE_HZ,
        )

    def _status(self) -> None:
        self._send(self.status())

    def _resend_all(self) -> None:
        for reading in self.queue:
            self._send(msgspec.structs.replace(reading, flags=reading.flags | frames.FLAG_RESENT))

    def log(self, level: int, text: str, now_ms: int) -> None:
        """Make the firmware emit a LOG frame (ASCII, truncated to the protocol's 48 bytes)."""
        self._run_until(now_ms)
        if self._off_until is None:
            data = text.encode("ascii", "replace")[: frames.MAX_LOG_TEXT].decode("ascii")
            self._send(frames.Log(max(0, min(4, level)), data))

    def set_mains(self, on: bool, now_ms: int) -> None:
        """Supply present or absent (the meter stays powered by USB and reports NO_SIGNAL)."""
        self._run_until(now_ms)
        self._mains_before, self._mains_since, self.mains_on = self.mains_on, float(now_ms), on

    # ----- input -------------------------------------------------------------------------------------------------

    def receive(self, data: bytes, now_ms: int) -> bytes:
        """Bytes from the gateway arriving at ``now_ms``; returns everything the meter sends up to then."""
        return b"".join(self.receive_frames(data, now_ms))

    def receive_frames(self, data: bytes, now_ms: int) -> list[bytes]:
        """Like :meth:`receive`, one item per frame. A meter that is off hears nothing."""
        self._run_until(now_ms)
        if self._off_until is None:
            self._receive(data)
        return self._drain()

    def _receive(self, data: bytes) -> None:
        for item in self._decoder.feed(data):
            if isinstance(item, frames.FrameError):
                self._rx_error()
            elif isinstance(item, frames.Ack):
                self._on_ack(item)
            elif isinstance(item, frames.Config):
                self._on_config(item)
            elif isinstance(item, frames.Sync):
                self._hello(resync=True)
                self._status()
                self._resend_all()
                self._rto_start = self._uptime(self.now_ms)
            else:  # a well-formed frame of a meter -> gateway kind is not a command
                self._rx_error()

    def _rx_error(self) -> None:
        self.rx_errors = min(RX_ERRORS_MAX, self.rx_errors + 1)

    def _on_ack(self, ack: frames.Ack) -> None:
        if ack.boot_count != self.boot_count or ack.seq >= self.next_seq:
            self.ignored_acks += 1  # another boot's ACK, or one for a reading that does not exist yet
            return
        last = self.acked.get(self.boot_count, 0)
        if ack.seq > last:
            self.acked[self.boot_count] = ack.seq
            while self.queue and self.queue[0].seq <= ack.seq:
                self.queue.popleft()
            self._rto_start = self._uptime(self.now_ms)
        oldest = self.queue[0].seq if self.queue else self.next_seq
        if ack.seq >= last and ack.seq + 1 < oldest:
            # the gateway waits for a reading this meter discarded: tell it, so it can move on
            self._status()

    def _on_config(self, cfg: frames.Config) -> None:
        def ok(value: int, keep: int, bounds: tuple[int, int]) -> bool:
            return value == keep or bounds[0] <= value <= bounds[1]

        valid = (
            ok(cfg.report_period_ms, frames.KEEP, CONFIG_PERIOD_RANGE)
            and ok(cfg.v_gain, frames.KEEP, CONFIG_GAIN_RANGE)
            and ok(cfg.i_gain, frames.KEEP, CONFIG_GAIN_RANGE)
            and ok(cfg.phase_cdeg, frames.KEEP_PHASE, CONFIG_PHASE_RANGE)
        )
        status = frames.CONFIG_REJECTED
        if valid:
            cal = self.calibration
            self.calibration = Calibration(
                cfg.v_gain or cal.v_gain,
                cfg.i_gain or cal.i_gain,
                cal.phase_cdeg if cfg.phase_cdeg == frames.KEEP_PHASE else cfg.phase_cdeg,
            )
            if cfg.report_period_ms:
                self.report_period_ms = cfg.report_period_ms
            if self.calibration != cal:
                self.uncalibrated = False
            if self.storage_fails:
                status = frames.CONFIG_STORAGE_ERROR
            else:
                self._stored_config = (self.report_period_ms, self.calibration, self.uncalibrated)
                status = frames.CONFIG_APPLIED
        cal = self.calibration
        self._send(
            frames.ConfigResult(cfg.request_id, status, self.report_period_ms, cal.v_gain, cal.i_gain,
                                cal.phase_cdeg)
        )
