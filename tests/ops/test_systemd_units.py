"""The systemd units (deploy/backend, deploy/gateway) and the backend's environment file example.

The backup's service and timer (deploy/backend/cds-backup.*) are verified together (a timer needs its service),
hardened at least like the backend, the timer's calendar is daily by ``systemd-analyze calendar``, and the
service's ExecStart runs for real against an InfluxDB (tests/ops/test_backup.py tests the commands themselves).

``systemd-analyze`` (Debian's ``systemd`` package) checks the units as systemd reads them: ``verify`` for their
syntax and commands, ``security --offline`` for how exposed the service is (the backend must be hardened at least
like the gateway). ``verify`` exits 0 on an unknown key or a bad value and only prints a warning, so any output
fails here. The units run ``/opt/cds/.venv/bin/python``, which ``verify`` requires to exist: the checked copies
run this checkout's interpreter instead, the only difference.

Of the hardening, ``MemoryDenyWriteExecute=yes`` is the one a Python service can trip over (a JIT or a library
building code at run time dies of it), and no systemd runs here to enforce it: the backend is run under the
kernel's own switch for the same rule (``prctl(PR_SET_MDWE)``) while it serves, ingests over MQTT and pulls and
parses the ONS files (pyarrow for Parquet).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.settings import Settings
from devstack.influxdb import InfluxService
from devstack.mosquitto import MosquittoService
from devstack.ons_fake import FakeOns
from devstack.processes import HOST
from tests.backend.conftest import (
    BackendProcess,
    Publisher,
    batch_bytes,
    count_points,
    make_settings,
    purge_session,
    reading,
)
from tests.ops.metricnames import REPO
from tests.ops.test_backup import rpc_address

UNITS = {"backend": REPO / "deploy" / "backend" / "cds-backend.service",
         "gateway": REPO / "deploy" / "gateway" / "cds-gateway.service"}
BACKUP_SERVICE = REPO / "deploy" / "backend" / "cds-backup.service"
BACKUP_TIMER = REPO / "deploy" / "backend" / "cds-backup.timer"
ENV_EXAMPLE = REPO / "deploy" / "backend" / "backend.env.example"
INSTALLED_PYTHON = "/opt/cds/.venv/bin/python"

# PR_SET_MDWE (65) with PR_MDWE_REFUSE_EXEC_GAIN (1): no mapping may become writable and executable, nor
# executable later; inherited by the threads and children of the process (Linux 6.3+).
_MDWE = ("import ctypes, sys\n"
         "if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:\n"
         "    sys.exit(f'PR_SET_MDWE: errno {ctypes.get_errno()}')\n")
MDWE_BACKEND = _MDWE + ("import runpy\n"
                        "sys.argv = ['backend', 'serve']\n"
                        "runpy.run_module('backend', run_name='__main__')\n")
MDWE_PROBE = _MDWE + ("import mmap\n"
                      "try:\n"
                      "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
                      "except PermissionError:\n"
                      "    sys.exit(0)\n"
                      "sys.exit('a writable and executable mapping was allowed')\n")


def systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    return binary


@pytest.fixture
def units(tmp_path: Path) -> dict[str, Path]:
    """Copies of the units that run this checkout's interpreter (``verify`` checks that the command exists)."""
    out = {}
    for name, unit in UNITS.items():
        text = unit.read_text(encoding="utf-8")
        assert INSTALLED_PYTHON in text, unit
        out[name] = tmp_path / unit.name
        out[name].write_text(text.replace(INSTALLED_PYTHON, sys.executable), encoding="utf-8")
    return out


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_verifies_without_a_warning(name: str, units: dict[str, Path]) -> None:
    result = subprocess.run([systemd_analyze(), "verify", "--man=no", str(units[name])], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def exposure(analyze: str, unit: Path) -> float:
    result = subprocess.run([analyze, "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert m, result.stdout + result.stderr
    return float(m.group(1))


def test_backend_is_hardened_at_least_like_the_gateway(units: dict[str, Path]) -> None:
    analyze = systemd_analyze()
    backend, gateway = exposure(analyze, units["backend"]), exposure(analyze, units["gateway"])
    assert backend <= gateway, (backend, gateway)
    assert backend < 2.0, backend  # systemd's scale: < 2 is "OK", 10 is an unprotected service
    text = UNITS["backend"].read_text(encoding="utf-8")
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "MemoryDenyWriteExecute=yes", "CapabilityBoundingSet=",
                 "SystemCallFilter=@system-service", "EnvironmentFile=/etc/cds-backend/backend.env"):
        assert re.search(f"^{re.escape(line)}$", text, re.M), line


@pytest.fixture
def backup_units(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the backup service (this checkout's interpreter) and its timer, side by side as systemd needs."""
    text = BACKUP_SERVICE.read_text(encoding="utf-8")
    assert INSTALLED_PYTHON in text
    service, timer = tmp_path / BACKUP_SERVICE.name, tmp_path / BACKUP_TIMER.name
    service.write_text(text.replace(INSTALLED_PYTHON, sys.executable), encoding="utf-8")
    shutil.copyfile(BACKUP_TIMER, timer)
    return service, timer


def unit_values(unit: Path, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", unit.read_text(encoding="utf-8"), re.M)


def test_backup_service_and_timer_verify_without_a_warning(backup_units: tuple[Path, Path]) -> None:
    result = subprocess.run([systemd_analyze(), "verify", "--man=no", *map(str, backup_units)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_backup_service_is_hardened_like_the_backend(units: dict[str, Path],
                                                     backup_units: tuple[Path, Path]) -> None:
    analyze = systemd_analyze()
    backup, backend = exposure(analyze, backup_units[0]), exposure(analyze, units["backend"])
    assert backup <= backend, (backup, backend)
    text = BACKUP_SERVICE.read_text(encoding="utf-8")
    for line in ("Type=oneshot", "User=cds-backend", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "MemoryDenyWriteExecute=yes", "CapabilityBoundingSet=", "UMask=0077", "StateDirectoryMode=0700",
                 "EnvironmentFile=/etc/cds-backend/backend.env"):
        assert re.search(f"^{re.escape(line)}$", text, re.M), line


def test_backup_timer_runs_daily_with_a_random_delay_and_catches_up() -> None:
    (calendar,) = unit_values(BACKUP_TIMER, "OnCalendar")
    result = subprocess.run([systemd_analyze(), "calendar", "--iterations=3", calendar], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    times = [dt.datetime.strptime(m, "%Y-%m-%d %H:%M:%S")
             for m in re.findall(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})", result.stdout)]
    assert len(times) == 3 and {b - a for a, b in itertools.pairwise(times)} == {dt.timedelta(days=1)}
    assert unit_values(BACKUP_TIMER, "RandomizedDelaySec") and unit_values(BACKUP_TIMER, "Persistent") == ["true"]
    assert unit_values(BACKUP_TIMER, "Unit") == [BACKUP_SERVICE.name]


def test_backup_service_command_makes_a_backup_and_keeps_the_newest(influx: InfluxService, unique_id: str,
                                                                    tmp_path: Path) -> None:
    """The unit's ExecStart as systemd runs it: ``${CDS_BACKUP_KEEP}`` from its Environment=, the state
    directory replaced by a temporary one, the backend's settings from the environment."""
    (command,) = unit_values(BACKUP_SERVICE, "ExecStart")
    keep = dict(v.split("=", 1) for v in unit_values(BACKUP_SERVICE, "Environment") if v.startswith("CDS_"))
    (state,) = unit_values(BACKUP_SERVICE, "StateDirectory")
    argv = command.replace("${CDS_BACKUP_KEEP}", keep["CDS_BACKUP_KEEP"]).split()
    assert argv[0] == INSTALLED_PYTHON and f"/var/lib/{state}" in argv
    argv = [sys.executable if a == INSTALLED_PYTHON else a.replace(f"/var/lib/{state}", str(tmp_path / state))
            for a in argv]
    settings = Settings(influx_db=unique_id)
    for db in (unique_id, settings.resolved_accounts_db()):
        influx.create_database(db)
    old = [tmp_path / state / f"cds-backup-2026010{n}T031500Z" for n in range(1, 4)]
    for path in old:
        path.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    env.update(BACKEND_INFLUX_URL=influx.url, BACKEND_INFLUX_DB=unique_id,
               BACKEND_INFLUX_BACKUP_ADDRESS=rpc_address(influx))
    try:
        result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    finally:
        for db in (unique_id, settings.resolved_accounts_db()):
            influx.query(f'DROP DATABASE "{db}"', epoch=None)
    assert result.returncode == 0, result.stdout + result.stderr
    backups = sorted(p.name for p in (tmp_path / state).iterdir())
    assert len(backups) == min(int(keep["CDS_BACKUP_KEEP"]), len(old) + 1) and backups[-1] > old[-1].name


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(the active assignments, the commented-out ones) of the example, as systemd's EnvironmentFile reads them."""
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"(#\s*)?(BACKEND_[A-Z0-9_]+)=(.*)", line.strip()):
            (commented if m.group(1) else active)[m.group(2)] = m.group(3)
    return active, commented


def with_secret_files(env: dict[str, str], tmp: Path) -> dict[str, str]:
    """``env`` with each ``*_FILE`` pointing at a file holding a valid value (the example's paths do not exist)."""
    values = {"USERS": '[{"username": "ana", "role": "admin", "password_hash": "scrypt$1$2$3"}]'}
    out = {}
    for key, value in env.items():
        if key.endswith("_FILE") and key not in ("BACKEND_SITES_FILE", "BACKEND_MQTT_CA_FILE"):
            field = key.removeprefix("BACKEND_").removesuffix("_FILE")
            path = tmp / field.lower()
            path.write_text(values.get(field, f"secret-of-{field.lower()}-" + "x" * 32) + "\n", encoding="utf-8")
            value = str(path)
        out[key] = value
    return out


def test_env_example_names_only_real_settings() -> None:
    active, commented = env_example()
    assert len(active) >= 15
    fields = set(Settings.__struct_fields__)
    for key in [*active, *commented]:
        name = key.removeprefix("BACKEND_").lower()
        assert name in fields or (name.endswith("_file") and name.removesuffix("_file") in fields), key


def test_env_example_values_parse_and_secret_files_are_read(tmp_path: Path) -> None:
    active, commented = env_example()
    settings = Settings.from_env(with_secret_files(active, tmp_path))
    assert settings.mqtt_client_id == active["BACKEND_MQTT_CLIENT_ID"]
    assert settings.influx_db == active["BACKEND_INFLUX_DB"]
    # each *_FILE of the example is one Settings reads (a secret field), not a name it ignores
    for key in [k for k in active if k.endswith("_FILE") and k != "BACKEND_SITES_FILE"]:
        field = key.removeprefix("BACKEND_").removesuffix("_FILE").lower()
        expected = (tmp_path / field).read_text(encoding="utf-8").strip()
        value = getattr(settings, field)
        assert (value if isinstance(value, str) else value[0].username) == (
            expected if field != "users" else "ana"), key
    # the commented lines are valid values too, once uncommented
    Settings.from_env(with_secret_files({**active, **commented}, tmp_path))


@pytest.fixture
def fake_ons() -> Iterator[FakeOns]:
    server = FakeOns(until=dt.date(2026, 1, 7)).start()  # a week of files: the parsing, not the volume
    try:
        yield server
    finally:
        server.stop()


def test_backend_serves_ingests_and_pulls_parquet_under_memory_deny_write_execute(
        tmp_path: Path, broker: MosquittoService, influx: InfluxService, unique_id: str, fake_ons: FakeOns,
        wait_for: Any) -> None:
    probe = subprocess.run([sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True, timeout=60,
                           check=False)
    if "PR_SET_MDWE: errno 22" in probe.stderr:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert probe.returncode == 0, probe.stderr
    settings = make_settings(broker, influx, unique_id, ons_sync_enabled=True, ons_base_url=fake_ons.url,
                             ons_first_year=fake_ons.until.year, ons_format="parquet", ons_attempts=2,
                             ons_backoff_max_s=0.05, retention_raw="INF")
    harness = BackendProcess(settings, tmp_path)  # for its environment and port; started here under MDWE
    log = tmp_path / "backend.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", MDWE_BACKEND], cwd=REPO, env=harness.env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    publisher = Publisher(broker)
    try:
        base = f"http://{HOST}:{harness.port}"

        def ready() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(f"{base}/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, what="backend ready under MDWE")
        now = int(time.time() * 1000)
        publisher.publish(f"cds/v1/{unique_id}/gw/up/readings", batch_bytes(
            unique_id, "gw", [reading("00000000000000b1", i, now - 1000 * (10 - i)) for i in range(10)]))
        publisher.wait_all_acked()
        wait_for(lambda: count_points(influx, unique_id) == 10, 30,
                 what=lambda: f"10 readings written, {count_points(influx, unique_id)} so far")

        def pulled() -> list[dict[str, Any]]:
            assert proc.poll() is None, log.read_text()[-3000:]
            return influx.rows(f'SELECT "ok", "error" FROM "{unique_id}"."ons"."ons_sync"', db=unique_id)

        syncs = wait_for(pulled, 120, what="the ONS pull")
        assert syncs[-1]["ok"] is True, syncs
        assert any("parquet" in path for _, path, _ in fake_ons.requests), "no Parquet file was read"
        assert httpx.get(f"{base}/metrics", timeout=5).status_code == 200
    finally:
        publisher.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        purge_session(broker.host, broker.port, settings.resolved_client_id())
        influx.query(f'DROP DATABASE "{unique_id}"', epoch=None)
    # a clean stop, still under MDWE: uvicorn shuts down, then re-raises the SIGTERM it handled, which systemd
    # counts as a clean exit
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert "Normal disconnection" in log.read_text(), log.read_text()[-3000:]
