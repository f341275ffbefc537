"""The health report's verdicts and text, apart from the probes that gather the facts (sans-IO).

An operator runs the check after an install or an upgrade, from cron, or from a monitoring system that only
understands exit codes; a rolling upgrade runs it before it retires an old replica. So a report is a list of
named checks, each ``ok``, ``aviso`` (degraded: look at it) or ``falha`` (broken), with a line in pt-BR and one
in English; the exit code is 1 when any check failed, 0 otherwise (warnings do not fail it), and ``--json``
prints the same structure for machines.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

Status = Literal["ok", "aviso", "falha"]
_RANK: Final[dict[Status, int]] = {"ok": 0, "aviso": 1, "falha": 2}


class Check(msgspec.Struct, frozen=True):
    name: str
    status: Status
    detalhe: str
    """pt-BR."""
    detail: str
    """The same in English."""


class Thresholds(msgspec.Struct, frozen=True):
    """Ages (seconds) beyond which data is stale: a warning at ``*_warn_s``, a failure at ``*_fail_s``."""

    readings_warn_s: float = 300
    readings_fail_s: float = 3600
    aneel_warn_s: float = 2 * 86400
    aneel_fail_s: float = 8 * 86400
    ons_warn_s: float = 2 * 86400
    ons_fail_s: float = 8 * 86400


class Report(msgspec.Struct, frozen=True):
    status: Status
    checks: list[Check]


def freshness(name: str, what_pt: str, what_en: str, age_s: float | None, warn_s: float, fail_s: float) -> Check:
    """A check of data age: never seen is a failure, older than ``fail_s`` too, older than ``warn_s`` a warning."""
    if age_s is None:
        return Check(name, "falha", f"{what_pt}: nenhum dado", f"{what_en}: no data at all")
    status: Status = "falha" if age_s > fail_s else "aviso" if age_s > warn_s else "ok"
    return Check(name, status, f"{what_pt}: último há {_human_pt(age_s)}", f"{what_en}: last {_human_en(age_s)} ago")


def report(checks: list[Check]) -> Report:
    worst: Status = "ok"
    for c in checks:
        if _RANK[c.status] > _RANK[worst]:
            worst = c.status
    return Report(status=worst, checks=checks)


def exit_code(rep: Report) -> int:
    return 1 if rep.status == "falha" else 0


def render(rep: Report) -> str:
    marks = {"ok": "OK   ", "aviso": "AVISO", "falha": "FALHA"}
    lines = [f"{marks[c.status]} {c.name}: {c.detalhe} | {c.detail}" for c in rep.checks]
    verdict = {"ok": "tudo certo / all good", "aviso": "funcionando, com avisos / working, with warnings",
               "falha": "com falhas / failing"}[rep.status]
    return "\n".join([*lines, f"=> {verdict}"])


def _human_pt(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h".replace(".", ",")


def _human_en(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"
