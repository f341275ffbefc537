"""Virtual meters on real pseudo-terminals, opened through their stable links with pyserial (as the gateway will).

Every wait polls a condition with a deadline; simulated time runs fast (short report periods), so the tests take
about a second each whatever the machine's speed.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest
import serial

from protocol import frames
from sim.eeprom import MeterEeprom
from sim.port import VirtualMeter
from sim.runner import MeterRunner, device_id_for

T = TypeVar("T")
TIMEOUT = 10.0
REPO = Path(__file__).resolve().parents[2]
EEPROM_DECODER = msgspec.json.Decoder(MeterEeprom)


class Gateway:
    """The gateway side of one port: pyserial + the codec, collecting everything it receives."""

    def __init__(self, path: Path | str) -> None:
        self.port = serial.Serial(str(path), timeout=0.01)
        self.decoder = frames.Decoder()
        self.frames: list[frames.Frame] = []
        self.errors: list[frames.FrameError] = []

    def pump(self) -> None:
        data = self.port.read(4096)
        for item in self.decoder.feed(data):
            (self.errors if isinstance(item, frames.FrameError) else self.frames).append(item)  # type: ignore[arg-type]

    def send(self, frame: frames.Frame) -> None:
        self.port.write(frames.encode(frame))
        self.port.flush()

    def readings(self) -> list[frames.Reading]:
        return [f for f in self.frames if isinstance(f, frames.Reading)]

    def hellos(self) -> list[frames.Hello]:
        return [f for f in self.frames if isinstance(f, frames.Hello)]

    def until(self, predicate: Callable[[], T], what: str, timeout: float = TIMEOUT) -> T:
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.frames[-5:]} {self.errors[-5:]}")

    def close(self) -> None:
        self.port.close()


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[MeterRunner]:
    with MeterRunner(speed=1.0, link_dir=tmp_path / "links", seed="port-tests") as r:
        yield r
        assert r.error is None, r.error


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    opened: list[Gateway] = []
    yield opened
    for gw in opened:
        gw.close()


def line_reader(proc: subprocess.Popen[str]) -> Callable[[], str]:
    """Lines of the CLI's stdout, read by a thread, so that a silent simulator fails the test instead of hanging it."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()

    def next_line() -> str:
        try:
            return lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError("the simulator printed nothing") from None

    return next_line


def connect(meter: VirtualMeter, gateways: list[Gateway]) -> Gateway:
    gw = Gateway(meter.link_path)
    gateways.append(gw)
    gw.send(frames.Sync())
    gw.until(gw.hellos, "HELLO")
    return gw


def test_stable_link_points_at_the_pty_and_speaks_the_protocol(runner: MeterRunner, gateways: list[Gateway]) -> None:
    meter = runner.add_meter(report_period_ms=20)
    assert meter.link_path.name == f"ttyAICSS-{meter.device}"
    assert os.readlink(meter.link_path) == meter.pty_path and meter.pty_path.startswith("/dev/pts/")
    gw = connect(meter, gateways)
    gw.until(lambda: len(gw.readings()) >= 20, "20 readings")
    assert gw.errors == []
    hello = gw.hellos()[0]
    assert (hello.device, hello.boot_count, hello.report_period_ms) == (meter.device, 1, 20)
    fresh = [r.seq for r in gw.readings() if not r.flags & frames.FLAG_RESENT]
    assert fresh == sorted(fresh) and len(set(fresh)) == len(fresh)


def test_ack_over_the_pty_empties_the_meter_queue(runner: MeterRunner, gateways: list[Gateway]) -> None:
    meter = runner.add_meter(report_period_ms=20)
    gw = connect(meter, gateways)
    gw.until(lambda: len(gw.readings()) >= 5, "readings")
    last = gw.readings()[-1].seq
    gw.send(frames.Ack(1, last))
    assert runner.wait_until(lambda: meter.truth().acked.get(1) == last, TIMEOUT)
    assert {(1, s) for s in range(1, last + 1)} <= meter.truth().must_have()


def test_readings_before_the_port_is_opened_are_resent_on_sync(runner: MeterRunner, gateways: list[Gateway]) -> None:
    meter = runner.add_meter(report_period_ms=20, queue_capacity=8, resend_min_ms=10**9)
    runner.wait_until(lambda: len(meter.truth().produced) >= 12, TIMEOUT)
    gw = connect(meter, gateways)
    truth = meter.truth()
    gw.until(lambda: any(isinstance(f, frames.Status) for f in gw.frames), "STATUS")
    gw.until(lambda: len([r for r in gw.readings() if r.flags & frames.FLAG_RESENT]) >= 8, "8 resent readings")
    resent = [r.seq for r in gw.readings() if r.flags & frames.FLAG_RESENT]
    # the meter said nothing useful while nobody listened; SYNC brought the queue (the newest 8) back
    assert len(resent) == 8 and resent == sorted(resent) and resent[0] > 1
    assert (1, 1) in truth.dropped


def test_meter_unplugged_gateway_sees_eio_and_replug_repoints_link(
    runner: MeterRunner, gateways: list[Gateway]
) -> None:
    meter = runner.add_meter(report_period_ms=20, queue_capacity=16)
    gw = connect(meter, gateways)
    old_pty = meter.pty_path
    meter.unplug()
    with pytest.raises(serial.SerialException):
        gw.until(lambda: False, "the port to fail", timeout=TIMEOUT)
    assert not meter.link_path.exists() and not meter.link_path.is_symlink()
    produced = len(meter.truth().produced)
    # unplugged, the meter keeps measuring into its RAM queue and drops the oldest when it is full
    assert runner.wait_until(lambda: len(meter.truth().dropped) >= 5, TIMEOUT)
    assert len(meter.truth().produced) > produced
    meter.replug()
    assert meter.link_path.is_symlink() and os.readlink(meter.link_path) == meter.pty_path
    assert meter.stats().replugs == 1
    gw2 = connect(meter, gateways)
    status = gw2.until(lambda: [f for f in gw2.frames if isinstance(f, frames.Status)], "STATUS")[0]
    assert gw2.hellos()[0].boot_count == 1  # unplugging the cable did not reset the meter
    assert status.dropped >= 5 and status.queued == 16
    resent = gw2.until(
        lambda: (lambda rs: rs if len(rs) >= 16 else [])([r for r in gw2.readings() if r.flags & frames.FLAG_RESENT]),
        "16 resent readings",
    )[:16]
    assert [r.seq for r in resent] == list(range(status.oldest_seq, status.oldest_seq + 16))
    del old_pty  # (the kernel may hand the same /dev/pts number to the new pty; the link is what matters)


def test_gateway_closing_the_port_does_not_block_the_meter(runner: MeterRunner, gateways: list[Gateway]) -> None:
    meter = runner.add_meter(report_period_ms=20)
    gw = connect(meter, gateways)
    gw.close()
    gateways.remove(gw)
    produced = len(meter.truth().produced)
    assert runner.wait_until(lambda: len(meter.truth().produced) > produced + 20, TIMEOUT)
    assert runner.wait_until(lambda: not meter.stats().connected, TIMEOUT)
    gw2 = connect(meter, gateways)
    gw2.until(lambda: len(gw2.readings()) > 3, "readings after reopening")


def test_meter_reboot_over_the_pty_sends_new_boot(runner: MeterRunner, gateways: list[Gateway]) -> None:
    meter = runner.add_meter(report_period_ms=20)
    gw = connect(meter, gateways)
    gw.until(lambda: len(gw.readings()) >= 3, "readings")
    meter.reboot()
    hello = gw.until(lambda: [h for h in gw.hellos() if h.boot_count == 2], "HELLO of boot 2")[0]
    assert hello.device == meter.device
    after = gw.frames[gw.frames.index(hello) :]
    first = gw.until(lambda: [r for r in gw.frames[gw.frames.index(hello) :] if isinstance(r, frames.Reading)],
                     "a reading of boot 2")[0]
    assert first.seq == 1 and first.flags & frames.FLAG_FIRST_AFTER_BOOT
    assert isinstance(after[1], frames.Status)
    assert meter.truth().boot_count == 2


def test_corrupted_frames_are_rejected_and_the_rest_arrive(runner: MeterRunner, gateways: list[Gateway]) -> None:
    meter = runner.add_meter(report_period_ms=20, resend_min_ms=10**9)
    gw = connect(meter, gateways)
    gw.until(lambda: len(gw.readings()) >= 3, "readings")
    meter.corrupt_next(3)
    gw.until(lambda: meter.stats().tx_corrupted == 3 and len(gw.errors) >= 3, "three bad frames")
    start = len(gw.readings())
    gw.until(lambda: len(gw.readings()) >= start + 10, "readings after the bad ones")
    assert all(e.reason in ("crc", "cobs", "short", "length") for e in gw.errors)
    seqs = [r.seq for r in gw.readings() if not r.flags & frames.FLAG_RESENT]
    missing = set(range(1, seqs[-1] + 1)) - set(seqs)
    assert len(missing) <= 3  # only the corrupted frames are gone (some may have been STATUS frames)


def test_dropped_ack_on_the_way_to_the_meter_leads_to_a_resend(
    runner: MeterRunner, gateways: list[Gateway]
) -> None:
    meter = runner.add_meter(report_period_ms=100, resend_min_ms=300)
    gw = connect(meter, gateways)
    gw.until(lambda: len(gw.readings()) >= 2, "readings")
    meter.drop_next(1, direction="rx")
    gw.send(frames.Ack(1, gw.readings()[-1].seq))
    gw.until(lambda: [r for r in gw.readings() if r.flags & frames.FLAG_RESENT], "a resend")
    assert meter.stats().rx_dropped == 1
    assert meter.truth().acked == {}  # no boot was ever acknowledged


def test_power_cut_log_and_config_storage_fault_over_the_pty(runner: MeterRunner, gateways: list[Gateway]) -> None:
    meter = runner.add_meter(report_period_ms=20)
    gw = connect(meter, gateways)
    meter.set_mains(False)
    gw.until(lambda: [r for r in gw.readings() if r.flags & frames.FLAG_NO_SIGNAL and r.freq_mhz == 0], "NO_SIGNAL")
    meter.set_mains(True)
    meter.log(3, "sensor check failed")
    gw.until(lambda: frames.Log(3, "sensor check failed") in gw.frames, "the LOG frame")
    meter.set_storage_fails(True)
    gw.send(frames.Config(77, report_period_ms=500))
    result = gw.until(lambda: [f for f in gw.frames if isinstance(f, frames.ConfigResult)], "CONFIG_RESULT")[0]
    assert (result.request_id, result.status, result.report_period_ms) == (77, frames.CONFIG_STORAGE_ERROR, 500)
    gw.until(lambda: not gw.readings()[-1].flags & frames.FLAG_NO_SIGNAL, "readings with the power back")


def test_clock_drift_and_truth_accessors_are_thread_safe(runner: MeterRunner) -> None:
    meter = runner.add_meter(report_period_ms=5)
    for ppm in (500, -500, 0) * 20:
        meter.set_drift_ppm(ppm)
        truth = meter.truth()
        assert [r.seq for r in truth.produced] == list(range(1, len(truth.produced) + 1))
    assert runner.wait_until(lambda: len(meter.truth().produced) > 50, TIMEOUT)


def test_many_meters_in_one_runner(runner: MeterRunner, gateways: list[Gateway]) -> None:
    meters = [runner.add_meter(report_period_ms=20, nominal_v=220) for _ in range(4)]
    assert len({m.device for m in meters}) == 4
    assert [m.device for m in meters] == [device_id_for("port-tests", i) for i in range(4)]
    gws = [connect(m, gateways) for m in meters]
    for gw in gws:
        gw.until(lambda gw=gw: len(gw.readings()) >= 5, "readings")  # type: ignore[misc]
        assert 190 < gw.readings()[-1].vrms < 235


def test_cli_prints_ports_and_exits_cleanly_on_sigterm(tmp_path: Path, gateways: list[Gateway]) -> None:
    links = tmp_path / "cli-links"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "meters", "--count", "2", "--seed", "9", "--voltage", "220",
         "--period-ms", "20", "--speed", "1", "--link-dir", str(links)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        next_line = line_reader(proc)
        lines = [next_line() for _ in range(2)]
        parsed = [dict(part.split("=", 1) for part in line.split()[1:]) for line in lines]
        assert [line.split()[0] for line in lines] == ["METER", "METER"]
        assert [p["device"] for p in parsed] == [device_id_for("9", 0), device_id_for("9", 1)]
        for p in parsed:
            assert os.readlink(p["link"]) == p["pty"]
        gw = Gateway(parsed[1]["link"])
        gateways.append(gw)
        gw.send(frames.Sync())
        hello = gw.until(gw.hellos, "HELLO from the CLI's meter")[0]
        assert hello.device == parsed[1]["device"]
        gw.until(lambda: len(gw.readings()) >= 3, "readings")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
        assert not any(Path(p["link"]).is_symlink() for p in parsed)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_scheduled_faults_reboot_and_corrupt(tmp_path: Path, gateways: list[Gateway]) -> None:
    links = tmp_path / "cli-faults"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sim", "meters", "--count", "1", "--seed", "f", "--period-ms", "20",
         "--speed", "4", "--link-dir", str(links), "--reboot-every", "2", "--corrupt-rate", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        fields = dict(part.split("=", 1) for part in line_reader(proc)().split()[1:])
        gw = Gateway(fields["link"])
        gateways.append(gw)
        gw.send(frames.Sync())
        gw.until(lambda: any(h.boot_count >= 2 for h in gw.hellos()), "a HELLO after a scheduled reboot")
        gw.until(lambda: len(gw.errors) >= 3, "corrupted frames")
        assert {e.reason for e in gw.errors} <= {"crc", "cobs", "short", "length"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT) == 0
        assert proc.stderr is not None and "fault: rebooted" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_eeprom_dir_makes_a_restart_a_power_cycle(tmp_path: Path, gateways: list[Gateway]) -> None:
    """With ``--eeprom-dir`` (the demo passes it) a restart of the simulator, clean or kill -9, brings each meter
    back as the next boot with its energy register kept, as a real meter's power cycle does, instead of boot 1
    from 0 mWh: keys the gateway had already committed, so it took the new readings for resends."""
    eeprom = tmp_path / "eeprom"
    device = device_id_for("e", 0)

    def run() -> tuple[subprocess.Popen[str], Gateway, frames.Hello]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sim", "meters", "--count", "1", "--seed", "e", "--period-ms", "200",
             "--speed", "20", "--start", "2026-06-01T12:00:00-03:00", "--link-dir", str(tmp_path / "links"),
             "--eeprom-dir", str(eeprom)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip
        procs.append(proc)
        fields = dict(part.split("=", 1) for part in line_reader(proc)().split()[1:])
        gw = Gateway(fields["link"])
        gateways.append(gw)
        gw.send(frames.Sync())
        return proc, gw, gw.until(gw.hellos, "HELLO")[0]

    procs: list[subprocess.Popen[str]] = []
    try:
        proc, gw, hello = run()
        assert (hello.device, hello.boot_count) == (device, 1)
        gw.until(lambda: gw.readings() and gw.readings()[-1].energy_mwh >= 3, "energy counted")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
        image = EEPROM_DECODER.decode((eeprom / f"{device}.json").read_bytes())
        assert image.boot_count == 1 and image.energy_mwh >= gw.readings()[-1].energy_mwh >= 3
        assert oct((eeprom / f"{device}.json").stat().st_mode & 0o777) == "0o600"

        proc, gw, hello = run()
        assert hello.boot_count == 2
        first = gw.until(gw.readings, "readings of boot 2")[0]
        assert first.energy_mwh >= image.energy_mwh  # the register carried over the power cycle
        proc.kill()  # the boot counter was saved at boot: a kill -9 does not take it back
        proc.wait(timeout=TIMEOUT)

        proc, gw, hello = run()
        assert hello.boot_count == 3
        assert gw.until(gw.readings, "readings of boot 3")[0].energy_mwh >= image.energy_mwh
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_cli_profile_prints_a_day() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sim", "profile", "--seed", "4", "--voltage", "220", "--date", "2026-01-15"],
        capture_output=True, text=True, cwd=REPO, check=True, timeout=TIMEOUT,
    ).stdout.splitlines()
    assert len(out) == 26 and out[-1].startswith("day") and out[-1].endswith("kWh")
    hourly = [float(line.split()[1]) for line in out[1:25]]
    assert float(out[-1].split()[1]) == pytest.approx(sum(hourly), abs=0.02)
