"""Where CDS keeps its data in InfluxDB: one name per database object, and the schema they form.

Database ``settings.influx_db`` holds five retention policies:

=========  ==============================  =================================================================
RP         measurement                     content
=========  ==============================  =================================================================
``raw``    ``readings``                    one point per reading (store/lineprotocol.py); the DEFAULT RP
``r1m``    ``readings``                    1-minute rollups per device (store/rollups.py)
``r1h``    ``readings``                    1-hour rollups per device, computed from ``r1m``
``marks``  ``rollup_dirty``/``rollup_state``  dirty-window marks of the rollup worker and its watermark (7 d)
``r1m``    ``energy_q``/``site_energy``    15-min energy per device and per site (store/energy_series.py)
``r1m``    ``energy_gap``                  data gaps per device (at the gap's end)
``r1h``    ``site_energy``                 hourly energy per site
``r1h``    ``energy_d``                    energy per device and local day (store/energy_series.py)
``aneel``  ``aneel_*``                     tariffs, Fio B components, bandeiras and sync log (aneel/store.py)
``ledger`` ``scee_creditos``               SCEE credits per site and cycle, kept forever (analytics/ledger.py)
``ons``    ``ons_*``                       grid balance, load curve, CMO, file states, sync log (ons/store.py)
=========  ==============================  =================================================================

The accounts store (users, site grants, audit log; accounts/store.py) lives in a database of its own,
``Settings.resolved_accounts_db()``, retention policy ``accounts``: ``account_user``, ``account_grant``,
``account_audit``, and the device book (ingest/devicebook.py): ``fleet_device``, ``fleet_gateway``,
``fleet_site``. Apart, so the InfluxQL console's READ user never sees password hashes.

Tags are ``site``, ``gateway``, ``device`` (the site series: ``site`` only); a point is keyed by measurement +
tags + time, so every write is idempotent (a replayed reading or a recomputed rollup overwrites itself).
Every name is defined here once; queries elsewhere build table names with :func:`table`.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from backend.errors import InfluxQueryError
from backend.settings import Settings
from backend.store.influx import InfluxClient, quote_ident

log = logging.getLogger(__name__)

# retention policies
RP_RAW: Final = "raw"
RP_1M: Final = "r1m"
RP_1H: Final = "r1h"
RP_MARKS: Final = "marks"
MARKS_DURATION: Final = "7d"
RP_ANEEL: Final = "aneel"
RP_ONS: Final = "ons"
RP_ACCOUNTS: Final = "accounts"
"""In the accounts database (``Settings.resolved_accounts_db()``), not in ``influx_db``: see accounts/store.py."""
AGGREGATED_RPS: Final = frozenset({RP_1M, RP_1H, RP_MARKS, RP_ANEEL, RP_ONS})
"""Policies of small, aggregated data: the InfluxQL console reads them without its raw-data time-range cap."""

# measurements
READINGS: Final = "readings"
DIRTY: Final = "rollup_dirty"
STATE: Final = "rollup_state"
LEFT_TO_DO: Final = "rollup_todo"
"""Windows a rollup pass left for the next one (what remains of a catch-up), named by the newest state point."""
ENERGY_Q: Final = "energy_q"
SITE_ENERGY: Final = "site_energy"
ENERGY_D: Final = "energy_d"
ENERGY_GAP: Final = "energy_gap"
ANEEL_TARIFF: Final = "aneel_tarifa"
ANEEL_FLAG: Final = "aneel_bandeira"
ANEEL_ADDER: Final = "aneel_bandeira_adicional"
ANEEL_SYNC: Final = "aneel_sync"
ANEEL_COMPONENT: Final = "aneel_componente"
SCEE_LEDGER: Final = "scee_creditos"
RP_LEDGER: Final = "ledger"
"""Kept forever: SCEE credits live 60 months, longer than any raw or 1-minute data they were computed from."""
ONS_BALANCE: Final = "ons_balanco"
ONS_BALANCE_DAY: Final = "ons_balanco_dia"
ONS_LOAD: Final = "ons_carga"
ONS_CMO: Final = "ons_cmo"
ONS_FILE: Final = "ons_arquivo"
ONS_SYNC: Final = "ons_sync"
ACCOUNT_USER: Final = "account_user"
ACCOUNT_GRANT: Final = "account_grant"
ACCOUNT_AUDIT: Final = "account_audit"
FLEET_DEVICE: Final = "fleet_device"
FLEET_GATEWAY: Final = "fleet_gateway"
FLEET_SITE: Final = "fleet_site"
FLEET_NAME: Final = "fleet_name"
"""Friendly names of meters given by a site's operator (``Geladeira``), beside the device book."""
NOTIFY_PREFS: Final = "notify_prefs"
"""Each user's notification preferences (backend/notify/preferences.py), in the accounts database."""
NOTIFY_TEST: Final = "notify_test"
"""Test messages users asked for, which the notifier picks up (backend/notify/deliveries.py); retention
``RP_ACCOUNTS``, which every replica creates, so a request can be written before the notifier ever ran."""
NOTIFY_DELIVERY: Final = "notify_delivery"
"""The notifier's delivery records, read by ``GET /api/v1/notificacoes/entregas`` (retention ``RP_NOTIFY``)."""
RP_NOTIFY: Final = "notify"
"""In the accounts database, created by the notifier: its delivery records, kept ``NOTIFY_DURATION``."""
NOTIFY_DURATION: Final = "90d"


_DURATION_UNITS_MS: Final = {"ns": 1e-6, "u": 1e-3, "µ": 1e-3, "ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000,
                              "d": 86_400_000, "w": 604_800_000}
_DURATION_PART: Final = re.compile(r"([0-9]+)(ns|u|µ|ms|s|m|h|d|w)")


def duration_ms(duration: str) -> int | None:
    """An InfluxQL duration literal of a retention policy (``30d``, ``1h30m``, ``INF``) in ms; None for INF."""
    if duration == "INF":
        return None
    return int(sum(int(n) * _DURATION_UNITS_MS[unit] for n, unit in _DURATION_PART.findall(duration)))


async def ensure_policy(influx: InfluxClient, db: str, rp: str, spec: str) -> None:
    """Create retention policy ``rp`` on database ``db`` with ``spec`` (``DURATION … REPLICATION 1 …``), or alter
    an existing one to ``spec``. Idempotent and safe when several replicas start at once: InfluxDB 1.x accepts a
    CREATE equal to what exists and refuses a different one with "already exists", which the ALTER then settles."""
    target = f"{quote_ident(rp)} ON {quote_ident(db)} {spec}"
    try:
        await influx.execute(f"CREATE RETENTION POLICY {target}", epoch=None)
    except InfluxQueryError as exc:
        if "already exists" not in str(exc):
            raise
        await influx.execute(f"ALTER RETENTION POLICY {target}", epoch=None)


def table(db: str, rp: str, measurement: str = READINGS) -> str:
    """Fully qualified ``"db"."rp"."measurement"`` for InfluxQL."""
    return f"{quote_ident(db)}.{quote_ident(rp)}.{quote_ident(measurement)}"


async def ensure_schema(influx: InfluxClient, settings: Settings) -> None:
    """Create the database and retention policies, or align their durations with the settings. Idempotent and
    safe when several replicas start at once (CREATE on an existing equal object is a no-op in InfluxDB 1.x)."""
    await influx.execute(f"CREATE DATABASE {quote_ident(settings.influx_db)}", epoch=None)
    wanted = {RP_RAW: (settings.retention_raw, True), RP_1M: (settings.retention_1m, False),
              RP_1H: (settings.retention_1h, False), RP_MARKS: (MARKS_DURATION, False)}
    for name, (duration, default) in wanted.items():
        spec = f"DURATION {duration} REPLICATION 1" + (" DEFAULT" if default else "")
        await ensure_policy(influx, settings.influx_db, name, spec)
    if settings.influx_readonly_username:
        # the InfluxQL console's READ-only user (imported here: readonly.py reads this module's names)
        from backend.store.readonly import ensure_readonly_user

        await ensure_readonly_user(influx, settings)
    log.info("influx schema ready", extra={"db": settings.influx_db})
