"""``python -m devstack --smoke``: the self-test of a running local system, through the product's own interfaces.

It checks what a newcomer looks at, in the order the data flows: the API's docs, the dashboard and the gateway's
status page answer; every simulated meter's readings are queryable through the REST API (meter -> gateway ->
broker -> backend -> InfluxDB, all of them with the shipped security); the grid data the backend pulled from the
fake ONS is served; and the demo history sent through the HTTP ingest reached the rollups. Each step polls until
one shared deadline while the launcher keeps supervising its children, and prints one pt-BR line that
tests/test_system.py reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

_POLL_S: Final = 0.5


@dataclass
class SmokeTest:
    """The checks of ``--smoke`` against one running system; :meth:`run` is True when all of them passed."""

    api: str
    """Base URL of the backend, e.g. ``http://127.0.0.1:8000``."""
    status_page: str
    """The gateway's status page."""
    site: str
    devices: list[str]
    token: Callable[[], str]
    """A fresh bearer token of the demo admin."""
    supervise: Callable[[], None]
    """Called between polls: the launcher restarts children that died meanwhile."""
    logs: Path
    timeout: float
    history: bool
    """Whether demo history was sent, so it must reach the rollups."""

    def run(self) -> bool:
        for page in (f"{self.api}/docs", f"{self.api}/painel/", self.status_page):
            if httpx.get(page, timeout=10).status_code != 200:
                return self._failed(f"{page} não respondeu 200")
        headers = {"Authorization": f"Bearer {self.token()}"}
        deadline = time.monotonic() + self.timeout
        return (self._readings(headers, deadline) and self._grid(headers, deadline)
                and (not self.history or self._history(headers, deadline)))

    def _readings(self, headers: dict[str, str], deadline: float) -> bool:
        """True once every meter has readings queryable through the REST API."""
        seen: dict[str, int] = {}
        while time.monotonic() < deadline:
            self.supervise()
            for device in self.devices:
                r = httpx.get(f"{self.api}/api/v1/devices/{device}/readings", params={"resolution": "raw"},
                              headers=headers, timeout=10)
                if r.status_code == 200:
                    seen[device] = len(r.json().get("points", []))
            if len(seen) == len(self.devices) and all(seen.values()):
                print(f"CDS smoke: leituras consultáveis pela API para todos os medidores: {seen}", flush=True)
                return True
            time.sleep(_POLL_S)
        return self._failed(f"leituras vistas: {seen}")

    def _grid(self, headers: dict[str, str], deadline: float) -> bool:
        """True once the backend has pulled the grid data from the fake ONS (its first pull runs at start-up)."""
        while time.monotonic() < deadline:
            self.supervise()
            r = httpx.get(f"{self.api}/api/v1/ons/agora", headers=headers, timeout=10)
            if r.status_code == 200:
                sin = r.json()["subsistemas"][-1]
                print(f"CDS smoke: rede elétrica (ONS simulado) às {sin['hora']}: carga do SIN "
                      f"{sin['carga']:.0f} MWmed, {sin['renovavel_pct']} % renovável", flush=True)
                return True
            time.sleep(_POLL_S)
        return self._failed("dados do ONS não apareceram")

    def _history(self, headers: dict[str, str], deadline: float) -> bool:
        """True once the history shows in the site's consumption: it reaches the rollups a little after it was
        stored (the backend's rollup worker is eventually consistent)."""
        kwh = 0.0
        while time.monotonic() < deadline:
            self.supervise()
            r = httpx.get(f"{self.api}/api/v1/analytics/consumo", params={"site": self.site, "granularidade": "day"},
                          headers=headers, timeout=30)
            r.raise_for_status()
            kwh = float(r.json()["kwh_total"])
            if kwh >= 0.1:  # live meters alone give a few Wh; this much is the history
                print(f"CDS smoke: consumo do local {self.site} nos últimos 7 dias: {kwh:.3f} kWh", flush=True)
                return True
            time.sleep(_POLL_S)
        return self._failed(f"consumo do histórico não apareceu ({kwh} kWh)")

    def _failed(self, what: str) -> bool:
        print(f"CDS smoke: FALHOU, {what}; logs em {self.logs}", flush=True)
        return False
