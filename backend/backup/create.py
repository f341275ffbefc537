"""Making one backup: InfluxDB's two databases, the backend's state file, gateway queues, the manifest, the pruning.

What is in it and why (manifest.py draws the layout):

- the readings' database (``BACKEND_INFLUX_DB``): readings, rollups, energy series, ANEEL's and ONS's data and the
  bookkeeping of the rollup worker — everything the analytics answer from;
- the accounts database (``BACKEND_ACCOUNTS_DB``): users, site grants, the audit log and the device book, which
  decides whose readings are accepted at all;
- the sites file (``BACKEND_SITES_FILE``), the backend's only state outside InfluxDB: without it no site can be
  priced; the secrets (JWT key, passwords) are not copied, they are the operator's to keep elsewhere;
- a consistent copy of each gateway queue named with ``--gateway-queue`` (sqlite.py), on a machine that runs one.

Order: everything goes into the hidden ``.partial`` folder, the manifest last, then the folder gets its name (or
becomes a ``.tar.gz``). Only a backup that completed prunes older ones, so a run of failed backups never leaves
the operator with fewer good ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import socket
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

import msgspec

from backend.backup.errors import BackupError
from backend.backup.folder import (
    make_private_dir,
    partial_path,
    publish,
    remove,
    scan,
    size_of,
    tighten,
    write_private,
)
from backend.backup.influx import backup_database, check_address, require_databases
from backend.backup.manifest import (
    GATEWAY_DIR,
    INFLUX_DIR,
    MANIFEST,
    STATE_DIR,
    TAR_SUFFIX,
    Database,
    GatewayQueue,
    Manifest,
    backup_name,
    encode,
    recorded_settings,
    to_prune,
)
from backend.backup.sqlite import copy_queue
from backend.settings import Settings


class Created(msgspec.Struct, frozen=True):
    """What one backup run made: the command prints it."""

    path: str
    manifest_sha256: str
    files: int
    bytes: int
    seconds: float
    pruned: list[str]


def cds_version() -> str:
    try:
        return version("cds")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def create_backup(settings: Settings, out: Path, *, gateway_queues: Sequence[Path] = (), keep: int | None = None,
                  archive: bool = False, influx: bool = True) -> Created:
    """Write one backup into the folder ``out`` (created 0700 if missing), then keep the newest ``keep`` backups
    there (None: prune nothing). ``influx=False`` leaves InfluxDB out (a machine with a gateway queue only)."""
    umask = os.umask(0o077)  # every file and folder private from creation, including what influxd writes
    try:
        return _create(settings, out, gateway_queues, keep, archive, influx, dt.datetime.now(dt.UTC))
    finally:
        os.umask(umask)


def _create(settings: Settings, out: Path, gateway_queues: Sequence[Path], keep: int | None, archive: bool,
            influx: bool, now: dt.datetime) -> Created:
    started = time.monotonic()
    if keep is not None and keep < 1:
        raise BackupError("--keep must be at least 1")
    name = backup_name(now)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (out / name).exists() or (out / (name + TAR_SUFFIX)).exists():
        raise BackupError(f"{out / name} exists already (two backups in the same second?)")
    roles: list[tuple[Literal["readings", "accounts"], str]] = (
        [("readings", settings.influx_db), ("accounts", settings.resolved_accounts_db())] if influx else [])
    if roles:
        check_address(settings.influx_backup_address)
        require_databases(settings, settings.influx_url, [db for _, db in roles])
    partial = partial_path(out, name)
    make_private_dir(partial)
    try:
        databases = []
        if roles:
            make_private_dir(partial / INFLUX_DIR)
        for role, db in roles:
            folder = f"{INFLUX_DIR}/{db}"
            backup_database(settings.influx_backup_address, db, partial / folder)
            databases.append(Database(role=role, name=db, folder=folder))
        sites = _copy_sites_file(settings, partial)
        queues = []
        if gateway_queues:
            make_private_dir(partial / GATEWAY_DIR)
        for n, queue in enumerate(gateway_queues, 1):
            rel = f"{GATEWAY_DIR}/{n}-{queue.name}"
            integrity = copy_queue(queue, partial / rel)
            queues.append(GatewayQueue(source=str(queue.resolve()), file=rel, integrity=integrity))
        tighten(partial)
        files = scan(partial)
        manifest = Manifest(created_at=now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            cds_version=cds_version(), hostname=socket.gethostname(),
                            settings=recorded_settings(settings), databases=databases, sites_file=sites,
                            gateway_queues=queues, files=[files[p] for p in sorted(files)])
        data = encode(manifest)
        write_private(partial / MANIFEST, data)
        path = publish(partial, out / name, archive=archive)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    total = path.stat().st_size if archive else size_of(path)
    pruned = _prune(out, keep, path.name) if keep is not None else []
    return Created(path=str(path), manifest_sha256=hashlib.sha256(data).hexdigest(), files=len(files) + 1,
                   bytes=total, seconds=round(time.monotonic() - started, 3), pruned=pruned)


def _copy_sites_file(settings: Settings, partial: Path) -> str | None:
    if not settings.sites_file:
        return None
    source = Path(settings.sites_file)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise BackupError(f"cannot read the sites file {source} (BACKEND_SITES_FILE): {exc}") from exc
    make_private_dir(partial / STATE_DIR)
    rel = f"{STATE_DIR}/{source.name}"
    write_private(partial / rel, data)
    return rel


def _prune(out: Path, keep: int, current: str) -> list[str]:
    doomed = to_prune([p.name for p in out.iterdir()], keep, current)
    for name in doomed:
        remove(out / name)
    return doomed
