"""The audit log: who did what, when, from which address, and how it ended — logins and every admin action.

Stored in the accounts database (measurement ``account_audit``, retention policy ``accounts``, kept forever):
one point per event at its nanosecond time, tagged only by ``action`` and ``outcome`` — two small fixed sets — so
an attacker trying a million invented user names at the login grows no tag index (the names are fields). An
admin action's entry is written in the same ``/write`` request as the change it records (see store.py), so a
change is never stored without its entry; a login's entry is written on its own, and when InfluxDB refuses it the
event still reaches the JSON log.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Final, Literal

import msgspec

from backend.errors import InfluxError
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ACCOUNT_AUDIT, RP_ACCOUNTS, table
from backend.store.lineprotocol import point

log = logging.getLogger(__name__)

Action = Literal["login", "criar_usuario", "desativar_usuario", "ativar_usuario", "redefinir_senha",
                 "conceder_site", "revogar_site", "consulta_influxql", "sincronizar_aneel", "sincronizar_ons",
                 "provisionar_medidor", "desativar_medidor", "ativar_medidor", "registrar_gateway",
                 "desativar_gateway", "registrar_site", "desativar_site", "nomear_medidor"]
Outcome = Literal["ok", "falha", "negado"]
"""``ok``; ``falha`` (wrong password, invalid request, the action failed); ``negado`` (a disabled user)."""
MAX_TEXT: Final = 200
"""Longest text kept per field: a user name or a detail longer than this is cut (no one can bloat the log)."""
MAX_ENTRIES: Final = 1000


class AuditEntry(msgspec.Struct, frozen=True):
    """One event of the audit log."""

    time_ms: int
    quando: str
    """The same instant in ISO 8601 (UTC)."""
    usuario: str
    """Who acted (for a failed login: the name that was tried)."""
    acao: str
    alvo: str
    """The user or object acted upon ("" when none)."""
    endereco: str
    """The client address the request came from."""
    resultado: str
    detalhe: str


def _cut(text: str) -> str:
    return "".join(c for c in text[:MAX_TEXT] if c.isprintable())


def audit_line(action: Action, outcome: Outcome, *, actor: str, target: str = "", address: str = "",
               detail: str = "", ts_ns: int | None = None) -> str:
    """The line-protocol point of one event (nanosecond time: two events of one replica never share a key)."""
    return point(ACCOUNT_AUDIT, {"action": action, "outcome": outcome},
                 {"actor": _cut(actor), "target": _cut(target), "address": _cut(address), "detail": _cut(detail)},
                 ts_ns if ts_ns is not None else time.time_ns())


class AuditLog:
    """Writes single events and reads the log back, newest first."""

    def __init__(self, influx: InfluxClient, settings: Settings) -> None:
        self.influx = influx
        self.db = settings.resolved_accounts_db()

    async def write(self, lines: list[str]) -> None:
        await self.influx.write(lines, self.db, rp=RP_ACCOUNTS, precision="ns")

    async def record(self, action: Action, outcome: Outcome, *, actor: str, target: str = "", address: str = "",
                     detail: str = "") -> None:
        """Write one event; never raises (a login must not fail because the log is down) but logs the event."""
        extra = {"audit_action": action, "outcome": outcome, "user": _cut(actor), "target": _cut(target),
                 "address": address, "detail": _cut(detail)}
        try:
            await self.write([audit_line(action, outcome, actor=actor, target=target, address=address,
                                         detail=detail)])
        except InfluxError:  # the JSON log still holds the event
            log.error("audit entry not stored", exc_info=True, extra=extra)
            return
        log.info("audit", extra=extra)

    async def entries(self, *, user: str | None = None, start_ms: int | None = None, end_ms: int | None = None,
                      limit: int = 100) -> list[AuditEntry]:
        """Events in [start, end), newest first; with ``user``, those the user did or that were done to them."""
        where = ["time >= $start", "time < $end"]
        params: dict[str, str | int] = {
            "start": (start_ms if start_ms is not None else 0) * 1_000_000,
            "end": (end_ms if end_ms is not None else int(time.time() * 1000) + 60_000) * 1_000_000}
        if user is not None:
            where.append("(actor = $user OR target = $user)")
            params["user"] = user
        rows = await self.influx.rows(
            f"SELECT * FROM {table(self.db, RP_ACCOUNTS, ACCOUNT_AUDIT)} WHERE {' AND '.join(where)} "
            f"ORDER BY time DESC LIMIT {min(max(limit, 1), MAX_ENTRIES)}", db=self.db, params=params)
        return [AuditEntry(time_ms=int(r["time"]), quando=_iso(int(r["time"])), usuario=r.get("actor") or "",
                           acao=r.get("action") or "", alvo=r.get("target") or "", endereco=r.get("address") or "",
                           resultado=r.get("outcome") or "", detalhe=r.get("detail") or "") for r in rows]


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
