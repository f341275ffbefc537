"""The SCEE credits ledger in InfluxDB: one point per site and billing cycle, kept forever, rebuilt on request.

Credits live 60 months — longer than the raw readings and the 1-minute rollups they come from — so the ledger is
stored, not recomputed on every bill. Layout: retention policy ``ledger`` (``DURATION INF``), measurement
``scee_creditos``, tag ``site``, time = first day of the cycle's reference month (UTC midnight); fields are the
month's kWh as exact decimal text and the balance per origin month as JSON. A point is keyed by site + month, so
rebuilding (``credits.ledger`` over the months' consumption and injection, then writing every month) overwrites
the same points: rebuilding twice gives the same ledger.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import msgspec

from backend.analytics.credits import Allocation, CreditLot
from backend.errors import InfluxQueryError
from backend.store.influx import InfluxClient, quote_ident
from backend.store.layout import RP_LEDGER, SCEE_LEDGER, ensure_policy, table
from backend.store.lineprotocol import point


class LedgerMonth(msgspec.Struct, frozen=True):
    """One cycle of a site's credits ledger (kWh)."""

    month: dt.date
    consumption: Decimal
    injected: Decimal
    compensated: Decimal
    from_injection: Decimal
    from_credits: Decimal
    billed: Decimal
    generated: Decimal
    used: Decimal
    expired: Decimal
    balance: Decimal
    balance_by_origin: dict[str, Decimal]
    """``"AAAA-MM"`` -> kWh still usable, oldest first."""


def _ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, 1, tzinfo=dt.UTC).timestamp() * 1000)


def _sum(values: Iterable[Decimal]) -> Decimal:
    return sum(values, Decimal(0))


def ledger_line(site: str, a: Allocation) -> str:
    fields: dict[str, str] = {
        "consumo": str(_sum(a.consumption.values())), "injetado": str(_sum(a.injection.values())),
        "compensado": str(a.compensated_total), "da_injecao": str(_sum(a.from_injection.values())),
        "de_creditos": str(a.used_total), "faturado": str(a.billed_total), "gerado": str(a.generated),
        "usado": str(a.used_total), "expirado": str(a.expired_total), "saldo": str(a.balance_total),
        "saldo_origem": json.dumps({f"{lot.origin:%Y-%m}": str(lot.kwh) for lot in a.balance}),
    }
    return point(SCEE_LEDGER, {"site": site}, fields, _ms(a.month))


class LedgerStore:
    """Reads and writes the credits ledger of one database."""

    def __init__(self, influx: InfluxClient, db: str) -> None:
        self.influx = influx
        self.db = db

    async def ensure_schema(self) -> None:
        await ensure_policy(self.influx, self.db, RP_LEDGER, "DURATION INF REPLICATION 1")

    async def _rows(self, q: str, site: str) -> list[dict[str, Any]]:
        try:
            return await self.influx.rows(q, db=self.db, params={"site": site})
        except InfluxQueryError as exc:
            if "retention policy not found" in str(exc):  # no ledger written yet: created on the first rebuild
                return []
            raise

    async def write(self, site: str, months: Iterable[Allocation]) -> None:
        await self.influx.write([ledger_line(site, a) for a in months], self.db, rp=RP_LEDGER, precision="ms")

    async def months(self, site: str, first: dt.date, last: dt.date) -> list[LedgerMonth]:
        """The stored cycles of ``site`` from month ``first`` to month ``last`` (inclusive)."""
        rows = await self._rows(
            f"SELECT * FROM {table(self.db, RP_LEDGER, SCEE_LEDGER)} WHERE {quote_ident('site')} = $site "
            f"AND time >= {_ms(first)}ms AND time <= {_ms(last)}ms", site)
        out = []
        for r in rows:
            origin = json.loads(r.get("saldo_origem") or "{}")
            out.append(LedgerMonth(
                month=dt.datetime.fromtimestamp(int(r["time"]) / 1000, dt.UTC).date(),
                consumption=Decimal(r["consumo"]), injected=Decimal(r["injetado"]),
                compensated=Decimal(r["compensado"]), from_injection=Decimal(r["da_injecao"]),
                from_credits=Decimal(r["de_creditos"]), billed=Decimal(r["faturado"]), generated=Decimal(r["gerado"]),
                used=Decimal(r["usado"]), expired=Decimal(r["expirado"]), balance=Decimal(r["saldo"]),
                balance_by_origin={k: Decimal(v) for k, v in origin.items()},
            ))
        return out

    async def balance_before(self, site: str, month: dt.date) -> list[CreditLot] | None:
        """The credits carried into the cycle of ``month`` (the previous stored cycle's balance); None = no
        earlier cycle stored."""
        q = (f"SELECT * FROM {table(self.db, RP_LEDGER, SCEE_LEDGER)} WHERE {quote_ident('site')} = $site "
             f"AND time < {_ms(month)}ms ORDER BY time DESC LIMIT 1")
        rows = await self._rows(q, site)
        if not rows:
            return None
        origin = json.loads(rows[0].get("saldo_origem") or "{}")
        return [CreditLot(origin=dt.date.fromisoformat(f"{k}-01"), kwh=Decimal(v)) for k, v in origin.items()]
