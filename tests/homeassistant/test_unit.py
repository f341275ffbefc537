"""The bridge's systemd template (deploy/backend/cds-homeassistant@.service), as tests/ops/test_systemd_units.py
checks the backend's: ``systemd-analyze verify`` without a warning (on an instance, as systemd loads it), hardened
at least like the backend, and its ExecStart the command the CLI really has."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backend.__main__ import main

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "backend" / "cds-homeassistant@.service"
BACKEND = REPO / "deploy" / "backend" / "cds-backend.service"
INSTALLED_PYTHON = "/opt/cds/.venv/bin/python"


def analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    return binary


def instance(unit: Path, folder: Path, name: str) -> Path:
    """A copy that runs this checkout's interpreter (``verify`` checks that the command exists)."""
    text = unit.read_text(encoding="utf-8")
    assert INSTALLED_PYTHON in text
    out = folder / name
    out.write_text(text.replace(INSTALLED_PYTHON, sys.executable), encoding="utf-8")
    return out


def exposure(unit: Path) -> float:
    result = subprocess.run([analyze(), "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert m, result.stdout + result.stderr
    return float(m.group(1))


def test_template_instance_verifies_without_a_warning(tmp_path: Path) -> None:
    unit = instance(TEMPLATE, tmp_path, "cds-homeassistant@casa-1.service")
    result = subprocess.run([analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_bridge_is_hardened_at_least_like_the_backend(tmp_path: Path) -> None:
    bridge = exposure(instance(TEMPLATE, tmp_path, "cds-homeassistant@casa-1.service"))
    backend = exposure(instance(BACKEND, tmp_path, BACKEND.name))
    assert bridge <= backend, (bridge, backend)


def test_exec_start_is_a_command_the_cli_has(capsys: pytest.CaptureFixture[str]) -> None:
    (command,) = re.findall(r"^ExecStart=(.*)$", TEMPLATE.read_text(encoding="utf-8"), re.M)
    argv = command.split()
    assert argv[:3] == [INSTALLED_PYTHON, "-m", "backend"] and argv[3:] == ["homeassistant", "--site", "%i"]
    with pytest.raises(SystemExit) as exc:
        main(["homeassistant", "--help"])
    assert exc.value.code == 0 and "--site" in capsys.readouterr().out
