"""The device book's storage and changes: provisioned meters, gateways and sites, shared by every replica.

Stored next to the users, in the accounts database (``Settings.resolved_accounts_db()``, kept forever, out of the
InfluxQL console's reach), for the reasons given in ``backend/accounts/store.py``: one point per meter
(``fleet_device``, tag ``device``), per gateway (``fleet_gateway``, tags ``site``, ``gateway``) and per site
(``fleet_site``, tag ``site``), at time 0, so a change rewrites the point (last write wins). Every change is
written in the same request as its audit entry; automatic claims are audited too, with the gateway as the actor.

Consistency between replicas: each holds the whole book in memory, reloaded every ``accounts_refresh_s``. A
reload reads a copy that may predate this replica's own changes made while it was reading (a meter claimed by
its first reading in the meantime); those changes are applied again over the new copy, else the claim would
vanish until the next reload and the meter's CONFIG be refused as unprovisioned (found under a CPU hog). A
meter this copy does not know is looked up in InfluxDB before it is claimed, so a meter another replica just
claimed is found there rather than claimed twice; two replicas claiming the same new meter for two gateways in
the same instant both write, and the later write wins — the administrator sees both claims in the audit log.
When InfluxDB cannot be read, the last copy keeps serving (ingest must not stop for it) and claims wait with
the message unacknowledged, as writes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Final, NoReturn, TypeVar

import msgspec
from tenacity import AsyncRetrying, retry_if_exception_type, stop_never, wait_exponential

from backend.accounts.audit import Action, AuditLog, audit_line
from backend.accounts.store import Actor
from backend.aneel.sites import SiteConfigError, load_sites
from backend.errors import (
    ApiError,
    BadRequestError,
    InfluxError,
    InfluxQueryError,
    InfluxUnavailableError,
    NotFoundError,
    UnavailableError,
)
from backend.ingest.limits import Budget
from backend.ingest.provisioning import (
    REFUSING,
    Book,
    DeviceRecord,
    GatewayRecord,
    Origin,
    Record,
    Refusal,
    SiteRecord,
)
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import FLEET_DEVICE, FLEET_GATEWAY, FLEET_SITE, RP_ACCOUNTS, table
from backend.store.lineprotocol import point
from protocol import ids

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_LOOKUP: Final = 64
"""Unknown meters of one message looked up in storage at most; the rest of a message inventing hundreds of ids
is refused without a query (no honest gateway adds that many meters at once)."""


def device_line(r: DeviceRecord) -> str:
    return point(FLEET_DEVICE, {"device": r.device}, {"site": r.site, "gateway": r.gateway, "origin": r.origin,
                                                     "disabled": r.disabled, "changed_ms": r.changed_ms}, 0)


def gateway_line(r: GatewayRecord) -> str:
    return point(FLEET_GATEWAY, {"site": r.site, "gateway": r.gateway},
                 {"disabled": r.disabled, "max_devices": r.max_devices, "changed_ms": r.changed_ms}, 0)


def site_line(r: SiteRecord) -> str:
    return point(FLEET_SITE, {"site": r.site}, {"name": r.name, "disabled": r.disabled, "changed_ms": r.changed_ms},
                 0)


def _origin(value: object) -> Origin:
    return "admin" if value == "admin" else "sites_file" if value == "sites_file" else "auto"


def _device(row: dict[str, object]) -> DeviceRecord:
    return DeviceRecord(device=str(row["device"]), site=str(row.get("site") or ""),
                        gateway=str(row.get("gateway") or ""), origin=_origin(row.get("origin")),
                        disabled=bool(row.get("disabled")), changed_ms=int(str(row.get("changed_ms") or 0)))


async def _rows(influx: InfluxClient, db: str, query: str,
                params: dict[str, str | int] | None = None) -> list[dict[str, object]]:
    try:
        return await influx.rows(query, db=db, params=params)
    except InfluxQueryError as exc:
        if "database not found" in str(exc):
            return []  # nothing stored yet
        raise


async def fetch(influx: InfluxClient, db: str) -> tuple[list[DeviceRecord], list[GatewayRecord], list[SiteRecord]]:
    """The whole book as stored in the accounts database ``db`` (raises InfluxError when it cannot be read)."""
    def t(measurement: str) -> str:
        return table(db, RP_ACCOUNTS, measurement)

    devices = await _rows(influx, db, f'SELECT * FROM {t(FLEET_DEVICE)} GROUP BY "device"')
    gateways = await _rows(influx, db, f'SELECT * FROM {t(FLEET_GATEWAY)} GROUP BY "site", "gateway"')
    sites = await _rows(influx, db, f'SELECT * FROM {t(FLEET_SITE)} GROUP BY "site"')
    return ([_device(r) for r in devices],
            [GatewayRecord(site=str(r["site"]), gateway=str(r["gateway"]), disabled=bool(r.get("disabled")),
                           max_devices=int(str(r.get("max_devices") or 0)),
                           changed_ms=int(str(r.get("changed_ms") or 0))) for r in gateways],
            [SiteRecord(site=str(r["site"]), name=str(r.get("name") or ""), disabled=bool(r.get("disabled")),
                        changed_ms=int(str(r.get("changed_ms") or 0))) for r in sites])


def declared_devices(settings: Settings) -> dict[str, str]:
    """Meter → site as the sites file lists them ({} without a file; a broken file is reported by analytics)."""
    try:
        sites = load_sites(Path(settings.sites_file)) if settings.sites_file else {}
    except SiteConfigError:
        return {}
    return {device: cfg.id for cfg in sites.values() for device in cfg.devices}


class DeviceBook:
    """The book of one replica: a cached copy, claims at first sight, and the administrator's changes."""

    def __init__(self, influx: InfluxClient, settings: Settings, audit: AuditLog,
                 declared: dict[str, str] | None = None) -> None:
        self.influx = influx
        self.settings = settings
        self.db = settings.resolved_accounts_db()
        self.audit = audit
        self.book = Book(declared)
        per_hour = settings.provisioning_new_devices_per_hour
        self.new_devices: Budget[tuple[str, str]] = Budget(per_hour / 3600, per_hour)
        self._task: asyncio.Task[None] | None = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._claim_lock = asyncio.Lock()
        self._unseen: list[list[Record]] = []
        """One list per reload in flight: the records this replica wrote or looked up since that reload began."""

    # --- loading ---------------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Replace the copy with what InfluxDB holds (raises InfluxError when it cannot be read)."""
        changes: list[Record] = []
        self._unseen.append(changes)
        try:
            stored = await fetch(self.influx, self.db)
        finally:
            self._unseen = [c for c in self._unseen if c is not changes]
        self.book.replace(*stored)
        for record in changes:
            self._apply(record, unless_older=True)

    def _put(self, record: Record) -> None:
        """A record this replica just wrote or read: into the copy, and remembered by every reload in flight."""
        self._apply(record, unless_older=False)
        for changes in self._unseen:
            changes.append(record)

    def _apply(self, record: Record, *, unless_older: bool) -> None:
        held = self.book.held(record)
        # ``unless_older``: the reload may have read a later change of another replica; that one stays.
        if not (unless_older and held is not None and held.changed_ms > record.changed_ms):
            self.book.put(record)

    async def start(self) -> None:
        with contextlib.suppress(InfluxError):  # the refresh loop tries again
            await self.load()
        self._task = asyncio.create_task(self._refresh_loop(), name="device-book-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.accounts_refresh_s)
            try:
                await self.load()
            except InfluxError as exc:
                log.warning("device book not reloaded; serving the last copy", extra={"error": str(exc)[:300]})

    # --- claims at first sight ---------------------------------------------------------------------------------

    async def resolve(self, site: str, gateway: str, devices: Iterable[str], *, wait: bool) -> dict[str, Refusal]:
        """Decide every meter of a message that the copy does not accept at once; claim those that may be claimed.

        Returns the refused meters with their reason (the others are now provisioned to ``site``/``gateway``).
        ``wait``: retry while InfluxDB is unavailable (MQTT ingest, whose message stays unacknowledged meanwhile)
        instead of raising InfluxUnavailableError (an HTTP request, answered 503)."""
        # One resolution per gateway at a time: the messages that follow a new meter's first one wait for its
        # claim and then find it owned, instead of each looking it up and claiming it again. (One lock per
        # gateway the broker let publish, kept: their number is bounded by its users.)
        async with self._locks.setdefault((site, gateway), asyncio.Lock()):
            return await self._resolve(site, gateway, set(devices), wait=wait)

    async def _resolve(self, site: str, gateway: str, devices: set[str], *, wait: bool) -> dict[str, Refusal]:
        book = self.book
        refused: dict[str, Refusal] = {}
        todo = []
        spent = self.new_devices.available((site, gateway), time.monotonic()) == 0
        for device in sorted(devices):
            verdict = book.verdict(site, gateway, device)
            if verdict in REFUSING:
                refused[device] = REFUSING[verdict]
            elif verdict == "unknown" and spent and book.declared.get(device) != site:
                # Nothing this gateway could claim: refused without a query (a flood of invented ids costs no I/O).
                refused[device] = "device_limit"
            elif verdict != "owned":
                todo.append(device)
        if len(todo) > MAX_LOOKUP:
            refused.update(dict.fromkeys(todo[MAX_LOOKUP:], "device_limit"))
            todo = todo[:MAX_LOOKUP]
        if not todo:
            return refused
        # One lookup-and-claim at a time in this replica: two gateways (of two sites) reporting the same new meter
        # at once must not both find it unknown and both claim it; the second sees the first's claim.
        async with self._claim_lock:
            return await self._claim(site, gateway, todo, refused, wait=wait)

    async def _claim(self, site: str, gateway: str, todo: list[str], refused: dict[str, Refusal], *,
                     wait: bool) -> dict[str, Refusal]:
        book = self.book
        for record in await self._retrying(lambda: self._lookup(todo), wait=wait):
            self._put(record)
        claims: list[DeviceRecord] = []
        now_ms = int(time.time() * 1000)
        limit = book.device_limit(site, gateway, self.settings.provisioning_max_devices_per_gateway)
        for device in todo:
            verdict = book.verdict(site, gateway, device)
            if verdict == "owned":
                continue
            if verdict in REFUSING:
                refused[device] = REFUSING[verdict]
                continue
            declared = book.declared.get(device) == site
            if verdict == "unknown" and not declared and not self.settings.provisioning_auto:
                refused[device] = "unprovisioned"
                continue
            if book.owned_by(site, gateway) + len(claims) >= limit:
                refused[device] = "device_limit"
                continue
            if verdict == "unknown" and not declared and not self.new_devices.take((site, gateway), time.monotonic()):
                refused[device] = "device_limit"
                continue
            claims.append(DeviceRecord(device=device, site=site, gateway=gateway,
                                       origin="sites_file" if declared else "auto", changed_ms=now_ms))
        if claims:
            entries = [audit_line("provisionar_medidor", "ok", actor=f"{site}/{gateway}", target=c.device,
                                  detail=f"automático ({c.origin}): site={site} gateway={gateway}") for c in claims]
            lines = [*map(device_line, claims), *entries]
            await self._retrying(lambda: self.audit.write(lines), wait=wait)
            for c in claims:
                self._put(c)
            log.info("meters claimed", extra={"site": site, "gateway": gateway, "devices": [c.device for c in claims]})
        return refused

    async def _lookup(self, devices: list[str]) -> list[DeviceRecord]:
        params: dict[str, str | int] = {f"d{i}": d for i, d in enumerate(devices)}
        where = " OR ".join(f'"device" = $d{i}' for i in range(len(devices)))
        rows = await _rows(self.influx, self.db, f'SELECT * FROM {table(self.db, RP_ACCOUNTS, FLEET_DEVICE)} '
                           f'WHERE {where} GROUP BY "device"', params)
        return [_device(r) for r in rows]

    @staticmethod
    async def _retrying(call: Callable[[], Awaitable[T]], *, wait: bool) -> T:
        """``call()``, again and again while InfluxDB is unavailable when ``wait``, else once."""
        if not wait:
            return await call()
        async for attempt in AsyncRetrying(retry=retry_if_exception_type(InfluxUnavailableError),
                                           wait=wait_exponential(multiplier=0.05, max=5.0), stop=stop_never,
                                           reraise=True):
            with attempt:
                return await call()
        raise AssertionError("unreachable: stop_never")

    # --- the administrator's changes (each audited in the same write) --------------------------------------------

    async def _commit(self, line: str, action: Action, actor: Actor, target: str, detail: str) -> None:
        entry = audit_line(action, "ok", actor=actor.username, target=target, address=actor.address, detail=detail)
        await self.audit.write([line, entry])
        log.info("audit", extra={"audit_action": action, "outcome": "ok", "user": actor.username, "target": target,
                                 "address": actor.address, "detail": detail})

    async def _refuse(self, action: Action, actor: Actor, target: str, exc: ApiError) -> NoReturn:
        await self.audit.record(action, "falha", actor=actor.username, target=target[:64], address=actor.address,
                                detail=exc.detail)
        raise exc

    async def _check_ids(self, action: Action, actor: Actor, target: str, *, site: str,
                         gateway: str | None = None, device: str | None = None) -> None:
        if not ids.is_ident(site) or (gateway is not None and not ids.is_ident(gateway)):
            await self._refuse(action, actor, target, BadRequestError(
                "Identificador de site ou gateway inválido: use letras minúsculas, dígitos, '_' ou '-'."))
        if device is not None and not ids.is_device_id(device):
            await self._refuse(action, actor, target, BadRequestError(
                "Identificador de medidor inválido: 16 dígitos hexadecimais minúsculos."))

    async def provision(self, device: str, site: str, gateway: str, *, actor: Actor) -> DeviceRecord:
        """Assign a meter to a site and gateway (a move when it had another owner); enabled."""
        action: Action = "provisionar_medidor"
        await self._check_ids(action, actor, device, site=site, gateway=gateway, device=device)
        record = DeviceRecord(device=device, site=site, gateway=gateway, origin="admin",
                              changed_ms=int(time.time() * 1000))
        old = self.book.devices.get(device)
        moved = f" (antes {old.site}/{old.gateway})" if old is not None else ""
        await self._commit(device_line(record), action, actor, device, f"site={site} gateway={gateway}{moved}")
        self._put(record)
        return record

    async def set_device_disabled(self, device: str, disabled: bool, *, actor: Actor) -> DeviceRecord:
        action: Action = "desativar_medidor" if disabled else "ativar_medidor"
        await self._fresh()
        old = self.book.devices.get(device)
        if old is None:
            await self._refuse(action, actor, device, NotFoundError(f"Medidor {device[:64]} não provisionado."))
        record = msgspec.structs.replace(old, disabled=disabled, changed_ms=int(time.time() * 1000))
        await self._commit(device_line(record), action, actor, device, "")
        self._put(record)
        return record

    async def put_gateway(self, site: str, gateway: str, *, max_devices: int, disabled: bool,
                          actor: Actor) -> GatewayRecord:
        """Register a gateway, change its meter limit, or disable/enable it."""
        target = f"{site}/{gateway}"
        action: Action = "desativar_gateway" if disabled else "registrar_gateway"
        await self._check_ids(action, actor, target, site=site, gateway=gateway)
        if not 0 <= max_devices <= 100_000:
            await self._refuse(action, actor, target, BadRequestError(
                "'limite_medidores' deve estar entre 0 (o padrão do servidor) e 100000."))
        record = GatewayRecord(site=site, gateway=gateway, disabled=disabled, max_devices=max_devices,
                               changed_ms=int(time.time() * 1000))
        await self._commit(gateway_line(record), action, actor, target,
                           f"limite_medidores={max_devices} desativado={disabled}")
        self._put(record)
        return record

    async def put_site(self, site: str, *, name: str, disabled: bool, actor: Actor) -> SiteRecord:
        """Register a site (a name for it), or disable/enable it: a disabled site's messages are all refused."""
        action: Action = "desativar_site" if disabled else "registrar_site"
        await self._check_ids(action, actor, site, site=site)
        if len(name) > 200 or not name.isprintable():
            await self._refuse(action, actor, site, BadRequestError("Nome do site: até 200 caracteres imprimíveis."))
        record = SiteRecord(site=site, name=name, disabled=disabled, changed_ms=int(time.time() * 1000))
        await self._commit(site_line(record), action, actor, site, f"nome={name!r} desativado={disabled}")
        self._put(record)
        return record

    async def _fresh(self) -> None:
        """A change starts from what InfluxDB holds now, not from a copy up to ``accounts_refresh_s`` old."""
        try:
            await self.load()
        except InfluxError as exc:
            raise UnavailableError("Cadastro de dispositivos indisponível no momento; tente novamente.") from exc
