"""Friendly names of meters ("Geladeira", "Chuveiro"), given by an operator of the meter's site.

Kept in ``backend/ingest/`` beside the device book and stored like it, in the accounts database (kept forever,
out of the InfluxQL console's reach): a name is part of the fleet's description, it must outlive the raw readings,
and its change is written in the same request as its audit entry (``nomear_medidor``), as the device book's are.
One point per site and meter (``fleet_name``, tags ``site`` and ``device``) at time 0, so a new name overwrites
the old (last write wins) and an empty name takes it back. The site is a tag so that a meter moved to another
site does not carry a name its new household never gave it.

Every replica reads the names lazily: a copy at most ``accounts_refresh_s`` old serves the dashboard's polling
(one small query per refresh, not one per request), a change made here is in this copy at once, and one made on
another replica is seen within that time. When InfluxDB cannot be read the last copy keeps serving; names are a
courtesy, never a reason for ``/painel/agora`` to fail.
"""

from __future__ import annotations

import contextlib
import time
from typing import Final

import msgspec

from backend.accounts.audit import Action, AuditLog, audit_line
from backend.accounts.store import Actor
from backend.errors import BadRequestError, InfluxError, InfluxQueryError
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import FLEET_NAME, RP_ACCOUNTS, table
from backend.store.lineprotocol import point

MAX_NAME: Final = 40
"""Longest name: it must fit a phone's list of meters and a chart legend."""
ACTION: Final[Action] = "nomear_medidor"


class MeterName(msgspec.Struct, frozen=True):
    """The name an operator gave a meter at a site."""

    device: str
    site: str
    nome: str
    """"" when the name was taken back (the dashboard falls back to its default)."""
    alterado_em_ms: int
    alterado_por: str


def clean_name(name: str) -> str:
    """The name as stored: spaces trimmed and runs of spaces collapsed; raises BadRequestError (pt-BR) when it is
    longer than :data:`MAX_NAME` or holds control characters."""
    text = " ".join(name.split())
    if len(text) > MAX_NAME or not text.isprintable():
        raise BadRequestError(f"Nome do medidor: até {MAX_NAME} caracteres imprimíveis (vazio volta ao padrão).")
    return text


class MeterNames:
    """One replica's copy of the names, refreshed when older than ``accounts_refresh_s``."""

    def __init__(self, influx: InfluxClient, settings: Settings, audit: AuditLog | None) -> None:
        self.influx = influx
        self.db = settings.resolved_accounts_db()
        self.max_age_s = settings.accounts_refresh_s
        self.audit = audit
        self._names: dict[tuple[str, str], MeterName] = {}
        self._loaded_at = -float("inf")

    async def names(self) -> dict[tuple[str, str], str]:
        """(site, device) → name, for the names that are set."""
        if time.monotonic() - self._loaded_at > self.max_age_s:
            with contextlib.suppress(InfluxError):  # the last copy serves until InfluxDB answers again
                await self._load()
        return {key: n.nome for key, n in self._names.items() if n.nome}

    async def _load(self) -> None:
        try:
            rows = await self.influx.rows(f'SELECT * FROM {table(self.db, RP_ACCOUNTS, FLEET_NAME)} '
                                          'GROUP BY "site", "device"', db=self.db)
        except InfluxQueryError as exc:
            if "database not found" not in str(exc):
                raise
            rows = []  # nothing stored yet
        self._names = {(str(r["site"]), str(r["device"])): MeterName(
            device=str(r["device"]), site=str(r["site"]), nome=str(r.get("name") or ""),
            alterado_em_ms=int(str(r.get("changed_ms") or 0)), alterado_por=str(r.get("changed_by") or ""))
            for r in rows}  # fmt: skip
        self._loaded_at = time.monotonic()

    async def rename(self, site: str, device: str, name: str, *, actor: Actor) -> MeterName:
        """Give ``device`` of ``site`` a name ("" takes it back), audited in the same write. The caller has
        checked that ``actor`` operates ``site`` and that the meter belongs to it."""
        try:
            text = clean_name(name)
        except BadRequestError as exc:
            if self.audit is not None:
                await self.audit.record(ACTION, "falha", actor=actor.username, target=device,
                                        address=actor.address, detail=exc.detail)
            raise
        record = MeterName(device=device, site=site, nome=text, alterado_em_ms=int(time.time() * 1000),
                           alterado_por=actor.username)
        line = point(FLEET_NAME, {"site": site, "device": device},
                     {"name": text, "changed_ms": record.alterado_em_ms, "changed_by": actor.username}, 0)
        entry = audit_line(ACTION, "ok", actor=actor.username, target=device, address=actor.address,
                           detail=f"site={site} nome={text!r}")
        await self.influx.write([line, entry], self.db, rp=RP_ACCOUNTS, precision="ns")
        self._names[(site, device)] = record
        return record
