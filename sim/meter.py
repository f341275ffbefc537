"""Sans-IO model of one AICSS meter: the firmware's protocol state machine (docs/protocol.md, sections 2 and 3).

Time goes in, bytes come out: :meth:`MeterModel.advance` moves the meter to a simulated instant (Unix ms) and
returns what it wrote on its UART by then; :meth:`MeterModel.receive` hands it bytes from the gateway. Nothing here
sleeps, opens a port or reads a clock, so tests drive it through hours of simulated time in milliseconds, and
``sim.runner`` binds it to a pseudo-terminal.

It mirrors firmware/lib/meter/meter.c rule for rule: 0x00 + HELLO + STATUS + boot LOG after a reset; READINGs in
a drop-oldest RAM ring; cumulative ACK for this boot only; go-back-N resend then STATUS after max(2 s, 2 x period)
without ACK progress; STATUS every 10 s after the last one and whenever an ACK waits for a discarded reading;
SYNC -> HELLO + STATUS + resend; CONFIG -> CONFIG_RESULT; the energy registers saved to "EEPROM" once a minute.
By default it is a bidirectional meter (firmware 1.1): READING2 with signed power and the import and export
registers; ``bidirectional=False`` plays firmware 1.0, whose READING carries the import register only.

It also records ground truth: every reading it produced, which ones it discarded from a full queue or lost with a
reset before they were acknowledged, and how far each boot was acknowledged.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final

import msgspec

from protocol import frames
from sim.eeprom import MeterEeprom
from sim.frontend import FACTORY, PAIR_RATE_HZ, Calibration, FrontEnd
from sim.loads import Household
from sim.truth import GroundTruth, ProducedReading

__all__ = ["GroundTruth", "MeterModel", "ProducedReading"]

FW_VERSION: Final = (1, 1, 0)
"""firmware/lib/board.h; 1.1 added the export register (READING2)."""
FW_VERSION_IMPORT_ONLY: Final = (1, 0, 0)
HW_REV: Final = 1
STATUS_INTERVAL_MS: Final = 10_000
RESEND_MIN_MS: Final = 2_000
SAVE_INTERVAL_MS: Final = 60_000
QUEUE_CAPACITY: Final = 16
U32: Final = 0xFFFFFFFF
RX_ERRORS_MAX: Final = 0xFFFF
UJ_PER_MWH: Final = 3_600_000

CONFIG_PERIOD_RANGE: Final = (250, 3_600_000)
CONFIG_GAIN_RANGE: Final = (1, 10_000_000)
CONFIG_PHASE_RANGE: Final = (-1000, 1000)
LOG_FACTORY_CAL: Final = "calibration CRC bad or blank: factory values"


def _whole_ms(t: float) -> int:
    """Milliseconds elapsed, as the firmware's counter shows them (ignoring float dust like 999.9999999)."""
    return math.floor(t + 1e-6)


def _at_or_after(a: int, b: int) -> bool:
    """``a >= b`` for u32 sequence numbers, wrap-safe like the firmware's ``(int32_t)(a - b) >= 0``."""
    return (a - b) & U32 < 0x80000000


class MeterModel:
    """The firmware's protocol state machine over a measuring front end fed by a :class:`Household`.

    ``device_id``: 8 bytes or 16 hex digits. ``start_ms``: simulated Unix time of power-on; the first
    :meth:`advance` returns the boot output. ``boot_count`` and ``energy_mwh``: the EEPROM before that power-on (the
    first boot reports ``boot_count + 1``). ``report_period_ms`` may be below the protocol's 250 ms for tests (CONFIG
    still enforces the range). ``integration_step_ms``: how finely the load is sampled inside a window.
    ``export_mwh``: the EEPROM's export register (bidirectional meters). ``bidirectional=False``: firmware 1.0,
    which sends READING (import register only, energy flowing out is not counted) and HELLO 1.0.0.
    ``uptime_start_ms``: the uptime counter at reset (the firmware's is 0; a test of the 49.7-day wrap starts near
    2^32). ``drift_ppm``: the crystal's error. Calibration: by default the unit was calibrated on the bench (its
    true gains stored: accurate readings); ``uncalibrated=True`` runs on factory gains (a few per cent off, the
    UNCALIBRATED flag and a LOG at boot); ``calibration`` stores given gains. ``record_truth=False`` keeps no
    per-reading history, only counters (long demo runs).
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
        export_mwh: int = 0,
        bidirectional: bool = True,
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
        if report_period_ms < 1 or queue_capacity < 1:
            raise ValueError("report period and queue capacity must be positive")
        self.frontend = FrontEnd(load or Household(seed, nominal_v), self.device_id, integration_step_ms)
        self.load = self.frontend.load
        self.queue_capacity = queue_capacity
        self.resend_min_ms = resend_min_ms
        self.status_interval_ms = status_interval_ms
        self.uptime_start_ms = uptime_start_ms
        self.record_truth = record_truth
        self.storage_fails = False
        """While True, CONFIG is applied but not persisted (CONFIG_RESULT status 2)."""
        # EEPROM: survives resets
        if uncalibrated:
            stored: Calibration | None = None
        else:
            stored = calibration if calibration is not None else self.frontend.true
        self._eeprom_cal = stored
        self._eeprom_period = report_period_ms
        self._eeprom_boot = boot_count
        self._eeprom_mwh = energy_mwh
        self._eeprom_export_mwh = export_mwh if bidirectional else 0
        self.bidirectional = bidirectional
        # ground truth
        self.produced: list[ProducedReading] = []
        self.dropped_keys: set[tuple[int, int]] = set()
        self.lost_keys: set[tuple[int, int]] = set()
        self.acked: dict[int, int] = {}
        # clock
        self._drift_rate = 1 + drift_ppm * 1e-6
        self.now_ms = start_ms
        self._out: list[bytes] = []
        self._off_until: int | None = None
        self._power_on(start_ms, "boot: power-on reset")

    # ----- clock ---------------------------------------------------------------------------------------------

    def _uptime(self, t_ms: float) -> float:
        return self._up_anchor + (t_ms - self._t_anchor) * self._drift_rate

    def _true_ms(self, uptime: float) -> float:
        return self._t_anchor + (uptime - self._up_anchor) / self._drift_rate

    @property
    def uptime_ms(self) -> int:
        """The meter's uptime counter now (wraps at 2^32 on the wire)."""
        return _whole_ms(self._uptime(self.now_ms)) & U32

    def set_drift_ppm(self, ppm: float, now_ms: int) -> None:
        """From ``now_ms`` on, the meter's crystal runs ``ppm`` parts per million fast (negative: slow)."""
        self._run_until(now_ms)
        if self._off_until is None:
            self._up_anchor, self._t_anchor = self._uptime(now_ms), float(now_ms)
        self._drift_rate = 1 + ppm * 1e-6

    # ----- reset ---------------------------------------------------------------------------------------------

    def _power_on(self, t_ms: int, note: str) -> None:
        self._eeprom_boot = (self._eeprom_boot + 1) & U32
        self.boot_count = self._eeprom_boot
        self.calibration = self._eeprom_cal or FACTORY
        self.calibration_stored = self._eeprom_cal is not None
        self.report_period_ms = self._eeprom_period
        self._energy_uj = self._eeprom_mwh * UJ_PER_MWH  # the sub-mWh remainder lived in RAM
        self._export_uj = self._eeprom_export_mwh * UJ_PER_MWH
        self._t_anchor, self._up_anchor = float(t_ms), float(self.uptime_start_ms)
        self.next_seq = 1
        self.queue: deque[frames.Reading] = deque()
        self.dropped = 0
        self.rx_errors = 0
        self._decoder = frames.Decoder()
        self._window_start = self._up_anchor
        self._window_len = self.report_period_ms  # a new period from CONFIG applies from the next window on
        self._last_progress = self._up_anchor
        self._next_save = self._up_anchor + SAVE_INTERVAL_MS
        self._out.append(frames.DELIMITER)  # resynchronise a receiver that saw half a frame before the reset
        self._hello()
        self._status(at=self._up_anchor)
        self._log(1, note)
        if not self.calibration_stored:
            self._log(2, LOG_FACTORY_CAL)

    def eeprom(self, *, brown_out: bool = False) -> MeterEeprom:
        """The EEPROM as it stands: what the next power-on starts from. ``brown_out``: as it would be after the
        supply went away now (the brown-out warning saves the registers; without it they are the last periodic
        save)."""
        cal = self._eeprom_cal
        return MeterEeprom(
            boot_count=self._eeprom_boot,
            energy_mwh=self.energy_mwh if brown_out else self._eeprom_mwh,
            export_mwh=self.export_mwh if brown_out else self._eeprom_export_mwh,
            report_period_ms=self._eeprom_period,
            calibration=(cal.v_gain, cal.i_gain, cal.phase_cdeg) if cal is not None else None,
        )

    def wipe_eeprom(self) -> None:
        """The boot counter and energy registers blank, as on a replaced EEPROM: the next power-on is boot 1 from
        0 mWh, reusing keys a gateway may already hold (the fault the gateway must not loop on)."""
        self._eeprom_boot = self._eeprom_mwh = self._eeprom_export_mwh = 0

    def reboot(self, now_ms: int, off_ms: int = 0, *, save_energy: bool = True) -> None:
        """Reset the meter: boot count +1, seq from 1, the RAM queue lost (recorded in ground truth as lost).

        ``off_ms`` > 0: a power cut; the meter is dark (measures and says nothing) that long, then boots. With
        ``save_energy`` (the brown-out warning saved the register, or a clean restart) the register keeps every
        whole mWh including the window in progress; without it (watchdog reset, sudden power loss) it restarts
        from the last periodic save, up to a minute old, as the firmware does. Like every call that is not I/O,
        the output it causes is collected by the next :meth:`advance`.
        """
        self._run_until(now_ms)
        if self._off_until is not None:
            return
        self._close_window(float(now_ms), partial=True)
        if save_energy:
            self._save_energy()
        if self.record_truth:
            self.lost_keys.update((self.boot_count, r.seq) for r in self.queue)
        self.queue.clear()
        if off_ms > 0:
            self._off_until = now_ms + off_ms
            return
        self._power_on(now_ms, "boot: brown-out reset" if save_energy else "boot: watchdog reset")

    def _save_energy(self) -> None:
        self._eeprom_mwh = self.energy_mwh
        self._eeprom_export_mwh = self.export_mwh

    # ----- time ----------------------------------------------------------------------------------------------

    def _rto(self) -> int:
        return max(self.resend_min_ms, 2 * self.report_period_ms)

    def _timers(self) -> list[tuple[float, int]]:
        """(meter uptime, what) of the next window end (0), STATUS (1), resend (2), energy save (3)."""
        timers = [
            (self._window_start + self._window_len, 0),
            (self._last_status + self.status_interval_ms, 1),
            (self._next_save, 3),
        ]
        if self.queue:
            timers.append((self._last_progress + self._rto(), 2))
        return timers

    def next_deadline_ms(self) -> int:
        """Simulated time of the meter's next spontaneous output (for a runner's sleep)."""
        if self._off_until is not None:
            return self._off_until
        return math.ceil(self._true_ms(min(self._timers())[0]))

    def advance(self, now_ms: int) -> bytes:
        """Run the meter up to simulated Unix time ``now_ms``; return the bytes it sent meanwhile."""
        return b"".join(self.advance_frames(now_ms))

    def advance_frames(self, now_ms: int) -> list[bytes]:
        """Like :meth:`advance`, one item per frame (each ends in 0x00; a lone b"\\x00" is the resync byte)."""
        self._run_until(now_ms)
        return self._drain()

    def _run_until(self, now_ms: int) -> None:
        now_ms = max(now_ms, self.now_ms)  # time never goes back
        if self._off_until is not None:
            if now_ms < self._off_until:
                self.now_ms = now_ms
                return
            boot_at, self._off_until = self._off_until, None
            self._power_on(boot_at, "boot: power-on reset")
        while True:
            up, what = min(self._timers())
            if self._true_ms(up) > now_ms:
                break
            if what == 0:
                self._close_window(self._true_ms(up), partial=False)
            elif what == 1:
                self._status(at=up)
            elif what == 2:
                self._resend_all(at=up)
                self._status(at=up)
            else:
                self._save_energy()
                self._next_save = up + SAVE_INTERVAL_MS
        self.now_ms = now_ms

    # ----- readings ------------------------------------------------------------------------------------------

    @property
    def energy_mwh(self) -> int:
        """The cumulative imported-energy register, mWh."""
        return self._energy_uj // UJ_PER_MWH

    @property
    def export_mwh(self) -> int:
        """The cumulative exported-energy register, mWh (0 for a meter without one)."""
        return self._export_uj // UJ_PER_MWH

    @property
    def uncalibrated(self) -> bool:
        """The firmware's rule: factory gains in force, or nothing valid stored."""
        return not self.calibration_stored or self.calibration == FACTORY

    def _close_window(self, t_end: float, *, partial: bool) -> None:
        up_end = self._uptime(t_end)
        window = self.frontend.measure(
            self._true_ms(self._window_start), t_end, up_end - self._window_start, self.calibration
        )
        self._energy_uj += window.energy_uj
        if self.bidirectional:
            self._export_uj += window.export_uj
        self._window_start = up_end
        self._window_len = self.report_period_ms
        if partial:
            return
        flags = window.flags
        if self.next_seq == 1:
            flags |= frames.FLAG_FIRST_AFTER_BOOT
        if self.uncalibrated:
            flags |= frames.FLAG_UNCALIBRATED
        reading = frames.Reading(
            seq=self.next_seq,
            uptime_ms=_whole_ms(up_end) & U32,
            vrms_mv=window.vrms_mv,
            irms_ma=window.irms_ma,
            p_dw=window.p_dw,
            s_dva=window.s_dva,
            pf_milli=window.pf_milli,
            freq_mhz=window.freq_mhz,
            energy_mwh=self.energy_mwh,
            flags=flags,
        )
        if self.bidirectional:
            reading = frames.Reading2(**msgspec.structs.asdict(reading), energy_export_mwh=self.export_mwh)
        self.next_seq = (self.next_seq + 1) & U32
        if self.record_truth:
            self.produced.append(ProducedReading(self.boot_count, reading.seq, round(t_end), reading))
        if len(self.queue) >= self.queue_capacity:
            old = self.queue.popleft()
            self.dropped += 1
            if self.record_truth:
                self.dropped_keys.add((self.boot_count, old.seq))
        if not self.queue:
            self._last_progress = up_end  # the resend timer runs from the oldest unacknowledged reading
        self.queue.append(reading)
        self._send(reading)

    # ----- output --------------------------------------------------------------------------------------------

    def _send(self, frame: frames.Frame) -> None:
        self._out.append(frames.encode(frame))

    def _drain(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def _hello(self) -> None:
        major, minor, patch = FW_VERSION if self.bidirectional else FW_VERSION_IMPORT_ONLY
        self._send(frames.Hello(self.device_id, major, minor, patch, HW_REV, self.boot_count, self.report_period_ms))

    def status(self) -> frames.Status:
        """The STATUS the meter would send now."""
        return frames.Status(
            oldest_seq=self.queue[0].seq if self.queue else self.next_seq,
            next_seq=self.next_seq,
            queued=len(self.queue),
            dropped=self.dropped & U32,
            rx_errors=self.rx_errors,
            sample_rate_hz=PAIR_RATE_HZ,
        )

    def _status(self, at: float | None = None) -> None:
        self._send(self.status())
        self._last_status = self._uptime(self.now_ms) if at is None else at

    def _resend_all(self, at: float | None = None) -> None:
        for reading in self.queue:
            self._send(msgspec.structs.replace(reading, flags=reading.flags | frames.FLAG_RESENT))
        self._last_progress = self._uptime(self.now_ms) if at is None else at

    def _log(self, level: int, text: str) -> None:
        data = text.encode("ascii", "replace")[: frames.MAX_LOG_TEXT].decode("ascii")
        self._send(frames.Log(max(0, min(4, level)), data))

    def log(self, level: int, text: str, now_ms: int) -> None:
        """Make the firmware emit a LOG frame (ASCII, truncated to the protocol's 48 bytes)."""
        self._run_until(now_ms)
        if self._off_until is None:
            self._log(level, text)

    def set_mains(self, on: bool, now_ms: int) -> None:
        """Supply present or absent from ``now_ms`` (the meter stays powered by USB and reports NO_SIGNAL)."""
        self._run_until(now_ms)
        self.frontend.set_mains(on, float(now_ms))

    def truth(self) -> GroundTruth:
        """A snapshot of the ground truth (copies; safe to keep)."""
        return GroundTruth(
            device=self.device_id.hex(),
            boot_count=self.boot_count,
            produced=tuple(self.produced),
            dropped=frozenset(self.dropped_keys),
            lost=frozenset(self.lost_keys),
            unacked=tuple((self.boot_count, r.seq) for r in self.queue),
            acked=dict(self.acked),
            energy_mwh=self.energy_mwh,
            rx_errors=self.rx_errors,
            export_mwh=self.export_mwh,
        )

    # ----- input ---------------------------------------------------------------------------------------------

    def receive(self, data: bytes, now_ms: int) -> bytes:
        """Bytes from the gateway arriving at ``now_ms``; returns everything the meter sends up to then."""
        return b"".join(self.receive_frames(data, now_ms))

    def receive_frames(self, data: bytes, now_ms: int) -> list[bytes]:
        """Like :meth:`receive`, one item per frame. A meter that is off hears nothing."""
        self._run_until(now_ms)
        if self._off_until is None:
            for item in self._decoder.feed(data):
                self._on_frame(item)
        return self._drain()

    def _on_frame(self, item: frames.Frame | frames.FrameError) -> None:
        if isinstance(item, frames.FrameError):
            self.rx_errors = min(RX_ERRORS_MAX, self.rx_errors + 1)
        elif isinstance(item, frames.Ack):
            self._on_ack(item)
        elif isinstance(item, frames.Config):
            self._on_config(item)
        elif isinstance(item, frames.Sync):
            self._hello()
            self._status()
            self._resend_all()
        # a meter -> gateway kind echoed back is valid, just not for us (the firmware ignores it too)

    def _on_ack(self, ack: frames.Ack) -> None:
        if ack.boot_count != self.boot_count:
            return
        progressed = False
        while self.queue and _at_or_after(ack.seq, self.queue[0].seq):
            self.queue.popleft()
            progressed = True
        if progressed:
            self._last_progress = self._uptime(self.now_ms)
        # ground truth: how far this boot is acknowledged (a bogus ACK beyond the last reading sent counts as that)
        acked = ack.seq if _at_or_after(self.next_seq - 1, ack.seq) else self.next_seq - 1
        if acked and _at_or_after(acked, self.acked.get(self.boot_count, 0)):
            self.acked[self.boot_count] = acked
        oldest = self.queue[0].seq if self.queue else self.next_seq
        if not _at_or_after(ack.seq + 1, oldest):
            self._status()  # the gateway waits for a reading this meter discarded: tell it, so it moves on

    def _on_config(self, cfg: frames.Config) -> None:
        def ok(value: int, keep: int, bounds: tuple[int, int]) -> bool:
            return value == keep or bounds[0] <= value <= bounds[1]

        status = frames.CONFIG_REJECTED
        if (
            ok(cfg.report_period_ms, frames.KEEP, CONFIG_PERIOD_RANGE)
            and ok(cfg.v_gain, frames.KEEP, CONFIG_GAIN_RANGE)
            and ok(cfg.i_gain, frames.KEEP, CONFIG_GAIN_RANGE)
            and ok(cfg.phase_cdeg, frames.KEEP_PHASE, CONFIG_PHASE_RANGE)
        ):
            cal = self.calibration
            self.calibration = Calibration(
                cfg.v_gain or cal.v_gain,
                cfg.i_gain or cal.i_gain,
                cal.phase_cdeg if cfg.phase_cdeg == frames.KEEP_PHASE else cfg.phase_cdeg,
            )
            self.report_period_ms = cfg.report_period_ms or self.report_period_ms
            if self.storage_fails:
                status = frames.CONFIG_STORAGE_ERROR
            else:
                self._eeprom_cal, self._eeprom_period = self.calibration, self.report_period_ms
                self.calibration_stored = True
                status = frames.CONFIG_APPLIED
        cal = self.calibration
        self._send(
            frames.ConfigResult(
                cfg.request_id, status, self.report_period_ms, cal.v_gain, cal.i_gain, cal.phase_cdeg
            )
        )
