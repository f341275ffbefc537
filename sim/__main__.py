"""Command line: ``python -m sim meters ...`` runs virtual meters on pseudo-terminals until SIGINT/SIGTERM.

Standard output gets one machine-parsable line per meter, then nothing else::

    METER index=0 device=a1c55... pty=/dev/pts/3 link=/tmp/cds-sim/ttyAICSS-a1c55...

Logs (faults injected, replugs) go to standard error. ``python -m sim profile`` prints a household's hourly
energy for one local day, to see what the load model does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sim.eeprom import EepromDir
    from sim.firmware import FirmwareBuild, FirmwareMeter
    from sim.port import VirtualMeter
    from sim.runner import MeterRunner

log = logging.getLogger("sim")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim", description="CDS hardware simulator (AICSS meters)")
    sub = parser.add_subparsers(dest="command", required=True)

    meters = sub.add_parser("meters", help="run N virtual meters on pseudo-terminals")
    meters.add_argument("--count", type=int, default=1, help="number of meters (default 1)")
    meters.add_argument("--seed", default="0", help="seed for households and device ids (default 0)")
    meters.add_argument("--voltage", type=int, choices=(127, 220), default=127, help="nominal voltage")
    meters.add_argument("--period-ms", type=int, default=1000,
                        help="report period, ms, of a meter without a saved EEPROM (default 1000)")
    meters.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second (default 1)")
    meters.add_argument("--link-dir", default="/tmp/cds-sim", help="directory for the stable ttyAICSS-* links")
    meters.add_argument("--queue", type=int, default=16, help="meter RAM queue capacity (default 16)")
    meters.add_argument("--start", help="simulated start time, ISO 8601 (default: now)")
    meters.add_argument("--drift-ppm", type=float, default=0.0, help="meter clock error, ppm")
    meters.add_argument("--integration-step-ms", type=int, default=200, help="load sampling step inside a window")
    meters.add_argument("--reboot-every", type=float, default=0, help="reboot a random meter every S sim seconds")
    meters.add_argument("--unplug-every", type=float, default=0, help="unplug a random meter every S sim seconds")
    meters.add_argument("--unplug-for", type=float, default=5, help="replug after S sim seconds (default 5)")
    meters.add_argument("--corrupt-rate", type=float, default=0.0, help="probability a frame is corrupted")
    meters.add_argument("--drop-rate", type=float, default=0.0, help="probability a frame is lost")
    meters.add_argument("--solar", type=int, default=0, help="the last N meters have rooftop PV (default 0)")
    meters.add_argument("--pv-kwp", type=float, default=4.0, help="size of each PV array, kWp (default 4)")
    meters.add_argument("--import-only", type=int, default=0,
                        help="the first N meters run firmware 1.0: READING with the import register only")
    meters.add_argument("--firmware", type=int, default=0,
                        help="the first N meters run the real firmware ELF in simavr, when the toolchain is "
                             "installed (simulated meters otherwise, with a warning)")
    meters.add_argument("--eeprom-dir",
                        help="keep each meter's EEPROM (boot counter, energy registers, period, calibration) here, "
                             "so a restart of the simulator is a power cycle (default: forgotten at exit)")

    profile = sub.add_parser("profile", help="print a household's hourly energy for one day")
    profile.add_argument("--seed", default="0")
    profile.add_argument("--voltage", type=int, choices=(127, 220), default=127)
    profile.add_argument("--pv-kwp", type=float, default=0.0, help="a PV array behind the meter, kWp (default none)")
    profile.add_argument("--date", default=dt.date.today().isoformat(), help="local date, YYYY-MM-DD")
    return parser


def _run_meters(args: argparse.Namespace) -> int:
    # pty and subprocess machinery only when it is used
    from sim.eeprom import EepromDir
    from sim.firmware import FirmwareMeter
    from sim.frontend import Calibration
    from sim.runner import MeterRunner, device_id_for

    if args.count < 1 or args.period_ms < 1 or args.speed <= 0 or args.pv_kwp <= 0:
        print("count, period, speed and kWp must be positive", file=sys.stderr)
        return 2
    start_ms = int(dt.datetime.fromisoformat(args.start).timestamp() * 1000) if args.start else None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    runner = MeterRunner(speed=args.speed, start_ms=start_ms, link_dir=args.link_dir, seed=args.seed)
    workdir = tempfile.TemporaryDirectory(prefix="cds-simavr-")
    eeproms = EepromDir(Path(args.eeprom_dir)) if args.eeprom_dir else None
    avr: list[FirmwareMeter] = []
    try:
        build = _firmware_build(args, Path(workdir.name))
        if build is not None:
            # the harness loads its EEPROM image from its work folder and writes it back at every reset and exit
            fw_dir = eeproms.path if eeproms else Path(workdir.name)
            for index in range(min(args.firmware, args.count)):
                avr.append(FirmwareMeter(build, fw_dir, runner.link_dir, device_id_for(args.seed, index),
                                         vrms=float(args.voltage)).start())  # fmt: skip
        for index in range(len(avr), args.count):
            device = device_id_for(args.seed, index)
            saved = eeproms.load(device) if eeproms else None
            meter = runner.add_meter(
                device,
                seed=f"{args.seed}/{index}",
                pv_kwp=args.pv_kwp if index >= args.count - args.solar else 0.0,
                bidirectional=index >= args.import_only,
                nominal_v=args.voltage,
                report_period_ms=saved.report_period_ms if saved else args.period_ms,
                queue_capacity=args.queue,
                integration_step_ms=args.integration_step_ms,
                drift_ppm=args.drift_ppm,
                record_truth=False,
                boot_count=saved.boot_count if saved else 0,
                energy_mwh=saved.energy_mwh if saved else 0,
                export_mwh=saved.export_mwh if saved else 0,
                calibration=Calibration(*saved.calibration) if saved and saved.calibration else None,
                uncalibrated=saved is not None and saved.calibration is None,
            )
            meter.set_corrupt_rate(args.corrupt_rate)
            meter.set_drop_rate(args.drop_rate)
        if eeproms:
            _save_eeproms(eeproms, runner.meters)  # the firmware saves its boot counter before the first reading
        runner.start()
        for index, fw in enumerate(avr):
            print(f"METER index={index} device={fw.device} pty={fw.pty_path} link={fw.link_path} firmware=simavr")
        for index, meter in enumerate(runner.meters, start=len(avr)):
            print(f"METER index={index} device={meter.device} pty={meter.pty_path} link={meter.link_path}")
        sys.stdout.flush()
        log.info("%d meter(s) running at %gx, %d of them the firmware in simavr; Ctrl-C to stop",
                 args.count, args.speed, len(avr))  # fmt: skip
        _fault_schedule(runner, args, stop, avr, eeproms)
        failed = [fw.error for fw in avr if fw.error]  # before the stop below ends the harnesses
    finally:
        runner.stop()
        if eeproms:
            _save_eeproms(eeproms, runner.meters, brown_out=True)  # a clean stop is a power-off the meter saw coming
        for fw in avr:
            fw.stop()
        workdir.cleanup()
    if runner.error is not None:
        log.error("simulator failed: %s", runner.error)
        return 1
    if failed:
        log.error("firmware meter failed: %s", "; ".join(failed))
        return 1
    log.info("stopped")
    return 0


def _firmware_build(args: argparse.Namespace, workdir: Path) -> FirmwareBuild | None:
    """The ELF and the simavr harness built into ``workdir`` when ``--firmware`` asks for them; None (the demo then
    runs simulated meters only) without the toolchain. The harness runs in real time at the firmware's own report
    period: ``--speed``, ``--period-ms``, ``--queue`` and the faults apply to the simulated meters only."""
    from sim.firmware import build_firmware

    if min(args.firmware, args.count) <= 0:
        return None
    build, why = build_firmware(workdir)
    if build is None:
        log.warning("--firmware %d: running simulated meters instead: %s", args.firmware, why)
    return build


def _save_eeproms(eeproms: EepromDir, meters: Sequence[VirtualMeter], *, brown_out: bool = False) -> None:
    for meter in meters:
        eeproms.save(meter.device, meter.eeprom(brown_out=brown_out))


def _fault_schedule(runner: MeterRunner, args: argparse.Namespace, stop: threading.Event,
                    avr: list[FirmwareMeter], eeproms: EepromDir | None) -> None:  # fmt: skip
    """Inject the scheduled faults until ``stop`` (or a firmware meter dies), and keep the EEPROM images current
    (a new boot counter within a second; the registers change at the meters' once-a-minute saves). Intervals are
    in simulated seconds."""
    rng = random.Random(f"{args.seed}/cli-faults")
    meters = runner.meters
    now = time.monotonic()
    next_reboot = now + args.reboot_every / args.speed if args.reboot_every > 0 and meters else float("inf")
    next_unplug = now + args.unplug_every / args.speed if args.unplug_every > 0 and meters else float("inf")
    replug_at: dict[int, float] = {}
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_reboot:
            meter = rng.choice(meters)
            meter.reboot()
            log.info("fault: rebooted %s (boot %d)", meter.device, meter.truth().boot_count)
            next_reboot = now + args.reboot_every / args.speed
        if now >= next_unplug:
            index = rng.randrange(len(meters))
            if index not in replug_at:
                meters[index].unplug()
                replug_at[index] = now + args.unplug_for / args.speed
                log.info("fault: unplugged %s", meters[index].device)
            next_unplug = now + args.unplug_every / args.speed
        for index, when in list(replug_at.items()):
            if now >= when:
                meters[index].replug()
                del replug_at[index]
                log.info("fault: replugged %s on %s", meters[index].device, meters[index].pty_path)
        if eeproms:
            _save_eeproms(eeproms, meters)
        if runner.error is not None or any(fw.error for fw in avr):
            return
        wake = min([next_reboot, next_unplug, *replug_at.values(), now + 1.0])
        stop.wait(max(0.0, wake - time.monotonic()))


def _profile(args: argparse.Namespace) -> int:
    from sim.loads import Household
    from sim.solar import solar_household

    # kWh per hour is the net: negative in the hours a solar household exports
    if args.pv_kwp > 0:
        house = solar_household(args.seed, args.voltage, args.pv_kwp)
    else:
        house = Household(args.seed, args.voltage)
    day = dt.date.fromisoformat(args.date)
    midnight = house.clock.midnight(day.toordinal())
    total = 0.0
    print("hour  kWh    Pmax_W  Vmin   Vmax")
    for hour in range(24):
        samples = [house.sample(midnight + hour * 3600 + k * 10 + 5) for k in range(360)]
        kwh = sum(s.p for s in samples) * 10 / 3.6e6
        total += kwh
        print(
            f"{hour:02d}   {kwh:5.3f}  {max(s.p for s in samples):7.0f}  "
            f"{min(s.vrms for s in samples):5.1f}  {max(s.vrms for s in samples):5.1f}"
        )
    print(f"day  {total:6.3f} kWh")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command == "meters":
        return _run_meters(args)
    return _profile(args)


if __name__ == "__main__":
    sys.exit(main())
