"""What the notifier and the API replicas tell each other through the accounts database.

The notifier runs on one host with its outbox (outbox.py); the API runs on any replica. Two small flows join them,
both in InfluxDB like the rest of the accounts state:

- **delivery records** (notifier -> API): ``notify_delivery``, retention ``notify`` (90 days), tag ``username``,
  one point per delivery at its creation time, rewritten at every change of status (same key: the newest wins).
  The timestamp is the creation time in ns plus a number derived from the delivery id, so two deliveries of one
  user created in the same millisecond stay two points. ``GET /api/v1/notificacoes/entregas`` reads them.
- **test requests** (API -> notifier): ``notify_test``, tag ``username``, one point per request; the notifier
  reads those newer than its mark (kept in the outbox), turns each into a ``teste`` event and moves the mark in
  the same transaction, so a request is queued once.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec

from backend.errors import InfluxQueryError
from backend.notify.outbox import Row, Status
from backend.notify.render import render
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import (
    NOTIFY_DELIVERY,
    NOTIFY_DURATION,
    NOTIFY_TEST,
    RP_ACCOUNTS,
    RP_NOTIFY,
    ensure_policy,
    table,
)
from backend.store.lineprotocol import point

RECENT: Final = 100
"""Deliveries ``/entregas`` shows (the newest)."""


class DeliveryOut(msgspec.Struct, frozen=True):
    """One delivery as its user sees it."""

    id: str
    """Also a webhook's ``X-CDS-Delivery`` header and an e-mail's Message-ID: a receiver drops repeats by it."""
    canal: str
    tipo_canal: str
    site: str
    evento: str
    """``alerta``, ``resolvido`` or ``teste``."""
    tipo_alerta: str
    assunto: str
    situacao: Status
    """``pendente`` (queued, held by quiet hours, or waiting for a retry), ``entregue`` or ``falhou`` (given up)."""
    tentativas: int
    ultimo_erro: str
    proxima_tentativa_ms: int | None
    criada_em_ms: int
    atualizada_em_ms: int


def _ts_ns(row: Row) -> int:
    salt = int.from_bytes(hashlib.sha256(row.id.encode()).digest()[:4], "big") % 1_000_000
    return row.created_ms * 1_000_000 + salt


def record_line(row: Row) -> str:
    return point(NOTIFY_DELIVERY, {"username": row.username}, {
        "id": row.id, "canal": row.channel.nome, "tipo_canal": row.channel.tipo, "site": row.event.alert.site,
        "evento": row.event.type, "tipo_alerta": row.event.alert.kind, "assunto": render(row.event).subject,
        "situacao": row.status, "tentativas": row.attempts, "ultimo_erro": row.last_error,
        "proxima_ms": row.next_ms if row.status == "pendente" else 0, "criada_ms": row.created_ms,
        "atualizada_ms": row.updated_ms}, _ts_ns(row))


class DeliveryLog:
    """Both flows, for the notifier (write records, read requests) and the API (the reverse)."""

    def __init__(self, influx: InfluxClient, settings: Settings) -> None:
        self.influx = influx
        self.db = settings.resolved_accounts_db()

    async def ensure_schema(self) -> None:
        """The records' retention policy (the accounts database itself is the replicas' to create)."""
        await ensure_policy(self.influx, self.db, RP_NOTIFY, f"DURATION {NOTIFY_DURATION} REPLICATION 1")

    async def write(self, rows: list[Row]) -> None:
        if rows:
            await self.influx.write([record_line(r) for r in rows], self.db, rp=RP_NOTIFY, precision="ns")

    async def recent(self, username: str) -> list[DeliveryOut]:
        rows = await self._rows(f"SELECT * FROM {table(self.db, RP_NOTIFY, NOTIFY_DELIVERY)} "
                                f'WHERE "username" = $u ORDER BY time DESC LIMIT {RECENT}', {"u": username})
        return [DeliveryOut(id=str(r["id"]), canal=str(r["canal"]), tipo_canal=str(r["tipo_canal"]),
                            site=str(r["site"]), evento=str(r["evento"]), tipo_alerta=str(r["tipo_alerta"]),
                            assunto=str(r["assunto"]), situacao=r["situacao"], tentativas=int(r["tentativas"]),
                            ultimo_erro=str(r.get("ultimo_erro") or ""),
                            proxima_tentativa_ms=int(r["proxima_ms"]) or None, criada_em_ms=int(r["criada_ms"]),
                            atualizada_em_ms=int(r["atualizada_ms"])) for r in rows]

    async def request_test(self, username: str, now_ms: int) -> None:
        await self.influx.write([point(NOTIFY_TEST, {"username": username}, {"pedido": True}, now_ms)], self.db,
                                rp=RP_ACCOUNTS, precision="ms")

    async def test_requests(self, after_ms: int) -> list[tuple[str, int]]:
        """(user, request time) of the requests after ``after_ms``, oldest first."""
        rows = await self._rows(f"SELECT pedido FROM {table(self.db, RP_ACCOUNTS, NOTIFY_TEST)} "
                                f'WHERE time > {int(after_ms)}ms GROUP BY "username"', {})
        return [(u, t) for t, u in sorted((int(r["time"]), str(r["username"])) for r in rows)]

    async def _rows(self, q: str, params: dict[str, str | int | float | bool]) -> list[dict[str, Any]]:
        try:
            return await self.influx.rows(q, db=self.db, params=params or None)
        except InfluxQueryError as exc:
            if "not found" in str(exc):  # no database or no retention policy yet: nothing was recorded
                return []
            raise
