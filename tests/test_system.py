"""README's run command, end to end: `python -m devstack --smoke` starts every part (Mosquitto, InfluxDB, fake
ANEEL, simulated meters, gateway, backend) as the user would, and exits 0 only once every meter's readings are
queryable through the REST API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_local_system_runs_and_serves_readings(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "devstack", "--smoke", "--timeout", "120", "--state-dir", str(tmp_path / "state"),
         "--meters", "2", "--period-ms", "500", "--history-days", "2", "--http-port", "0", "--status-port", "0",
         "--mqtt-port", "0", "--influx-port", "0", "--aneel-port", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=280,
    )
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((tmp_path / "state" / "logs").glob("*")))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{logs}"
    assert "CDS está rodando" in proc.stdout
    assert "leituras consultáveis pela API para todos os medidores" in proc.stdout
    assert "histórico de demonstração" in proc.stdout and "kWh" in proc.stdout
