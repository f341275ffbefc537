"""What the run watches while it runs: the gateway's counters across its restarts, and each process's memory and CPU.

Both survive the kills they witness. The gateway's process counters (``/status.json``: readings committed,
duplicates, re-sends ...) restart from zero with every gateway process, so each incarnation's last sample is
added to the total when a new pid appears; the run also samples right before it kills the gateway. Memory is the
kernel's own high-water mark (``VmHWM`` in ``/proc/<pid>/status``), so a peak between two samples is not missed;
CPU is ``utime + stime`` of each incarnation, summed per role.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import httpx

CLK_TCK = os.sysconf("SC_CLK_TCK")


class GatewayCounters:
    """Totals of the gateway's process counters over every incarnation, plus its last queue figures."""

    def __init__(self, status_url: str) -> None:
        self._url = status_url
        self._pid: int | None = None
        self._base: Counter[str] = Counter()
        self._current: Counter[str] = Counter()
        self.queue: dict[str, Any] = {}
        """The ``queue`` object of the last status (its loss counters are persisted in the queue file)."""

    def poll(self, pid: int | None) -> dict[str, Any] | None:
        """Sample the status page of the gateway process ``pid``; None when it does not answer."""
        if pid is None:
            return None
        try:
            status: dict[str, Any] = httpx.get(self._url, timeout=2.0).json()
        except (httpx.HTTPError, ValueError):
            return None
        if pid != self._pid:
            self._base += self._current
            self._current = Counter()
            self._pid = pid
        self._current = Counter({**status["counters"], **{f"error_{k}": v for k, v in status["errors"].items()}})
        self.queue = status["queue"]
        return status

    def totals(self) -> dict[str, int]:
        return dict(self._base + self._current)


class Usage(NamedTuple):
    peak_rss_mb: float
    cpu_s: float
    processes: int
    """Incarnations seen (1 + restarts observed)."""


class ProcessPeaks:
    """Peak RSS and CPU seconds per role, over every pid that role had."""

    def __init__(self) -> None:
        self._hwm_kb: dict[str, int] = {}
        self._cpu: dict[tuple[str, int], float] = {}

    def sample(self, pids: dict[str, int | None]) -> None:
        for role, pid in pids.items():
            if pid is None:
                continue
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # it exited between the pid lookup and the read
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self._hwm_kb[role] = max(self._hwm_kb.get(role, 0), int(line.split()[1]))
            self._cpu[(role, pid)] = (int(stat[11]) + int(stat[12])) / CLK_TCK

    def usage(self) -> dict[str, Usage]:
        out = {}
        for role, kb in sorted(self._hwm_kb.items()):
            cpu = [c for (r, _), c in self._cpu.items() if r == role]
            out[role] = Usage(round(kb / 1024, 1), round(sum(cpu), 1), len(cpu))
        return out
