"""The notifier's systemd unit (deploy/backend/cds-notify.service), as tests/ops/test_systemd_units.py checks the
backend's: ``systemd-analyze verify`` without a warning, hardened at least like the backend, and its ExecStart the
command the CLI really has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from backend.__main__ import main
from tests.homeassistant.test_unit import BACKEND, INSTALLED_PYTHON, REPO, analyze, exposure, instance

UNIT = REPO / "deploy" / "backend" / "cds-notify.service"


def test_unit_verifies_without_a_warning(tmp_path: Path) -> None:
    unit = instance(UNIT, tmp_path, UNIT.name)
    result = subprocess.run([analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_notifier_is_hardened_at_least_like_the_backend(tmp_path: Path) -> None:
    notifier = exposure(instance(UNIT, tmp_path, UNIT.name))
    backend = exposure(instance(BACKEND, tmp_path, BACKEND.name))
    assert notifier <= backend, (notifier, backend)


def test_exec_start_is_a_command_the_cli_has_and_the_outbox_is_its_state_directory(
        capsys: pytest.CaptureFixture[str]) -> None:
    text = UNIT.read_text(encoding="utf-8")
    (command,) = re.findall(r"^ExecStart=(.*)$", text, re.M)
    assert command.split() == [INSTALLED_PYTHON, "-m", "backend", "notify"]
    assert "StateDirectory=cds-notify\n" in text and "BACKEND_NOTIFY_STATE_DIR=/var/lib/cds-notify" in text
    with pytest.raises(SystemExit) as exc:
        main(["notify", "--help"])
    assert exc.value.code == 0 and "notify" in capsys.readouterr().out
