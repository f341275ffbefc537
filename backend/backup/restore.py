"""Restoring one backup: check every file first, then InfluxDB's databases, the sites file and gateway queues.

Nothing is written anywhere before the whole backup has been checked against its manifest (and, when given, the
manifest against the SHA-256 the backup command printed), and before every target has been found empty: a
restore goes into a fresh InfluxDB (none of the databases exists there) and onto paths that do not exist, so it
never overwrites live data and never stops half-way through because of something it could have seen first.

Database names: the backup's own by default (``cds``, ``cds_accounts``); ``--db`` and ``--accounts-db`` restore
them under other names, for a deployment whose settings name them otherwise (``influxd restore -newdb``).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec

from backend.backup.errors import BackupError, DamagedBackupError, TargetError
from backend.backup.folder import read_manifest, scan, unpack, write_private
from backend.backup.influx import check_address, require_absent, require_databases, restore_database
from backend.backup.manifest import TAR_SUFFIX, GatewayQueue, Manifest, decode, problems
from backend.backup.sqlite import copy_queue
from backend.settings import Settings

_DB_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""As BACKEND_INFLUX_DB and BACKEND_ACCOUNTS_DB accept them."""


class Restored(msgspec.Struct, frozen=True):
    """What one restore run did: the command prints it."""

    backup: str
    created_at: str
    cds_version: str
    manifest_sha256: str
    files: int
    databases: dict[str, str] = {}
    """Database in the backup -> database it was restored as (empty after ``--check``)."""
    sites_file: str | None = None
    gateway_queues: list[str] = []
    checked_only: bool = False
    sites_file_in_backup: str | None = None


def verify(folder: Path, expect_sha256: str | None = None) -> tuple[Manifest, str]:
    """The manifest of the backup in ``folder`` and its SHA-256, once every file matches it; DamagedBackupError
    (with every problem found) otherwise."""
    data = read_manifest(folder)
    digest = hashlib.sha256(data).hexdigest()
    if expect_sha256 is not None and digest != expect_sha256.strip().lower():
        raise DamagedBackupError(f"the manifest's SHA-256 is {digest}, not the expected {expect_sha256}",
                                 [f"manifest.json: SHA-256 {digest}"])
    manifest = decode(data)
    found = problems(manifest, scan(folder))
    if found:
        raise DamagedBackupError(f"{folder} does not match its manifest ({len(found)} problem(s))", found)
    return manifest, digest


def _queue_targets(manifest: Manifest, specs: Sequence[str]) -> list[tuple[GatewayQueue, Path]]:
    """``[SOURCE=]PATH`` specs -> (queue in the backup, where to restore it). SOURCE is the path the queue was
    copied from or its file in the backup; it may be left out when the backup holds one queue."""
    out = []
    for spec in specs:
        source, sep, dest = spec.rpartition("=")
        if sep:
            matches = [q for q in manifest.gateway_queues
                       if source in (q.source, q.file, Path(q.file).name, Path(q.source).name)]
        else:
            matches = list(manifest.gateway_queues)
        if len(matches) != 1:
            known = ", ".join(f"{q.source} ({q.file})" for q in manifest.gateway_queues) or "none"
            raise BackupError(f"--gateway-queue {spec}: name one of the backup's queues as SOURCE=PATH "
                              f"(queues in the backup: {known})")
        out.append((matches[0], Path(dest)))
    return out


class RestoreOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What to restore and where (the command's options)."""

    target_url: str | None = None
    """HTTP API of the target InfluxDB (checked empty before, holding the databases after); None = the settings'."""
    target_address: str | None = None
    """Its RPC address for ``influxd restore``; None = ``BACKEND_INFLUX_BACKUP_ADDRESS``."""
    db: str | None = None
    """Restore the readings' database under this name; None = its name in the backup."""
    accounts_db: str | None = None
    """Restore the accounts database under this name; None = its name in the backup."""
    gateway_queues: tuple[str, ...] = ()
    """``[SOURCE=]PATH``: restore that queue of the backup to PATH."""
    sites_file: str | None = None
    """Write the backup's sites file here."""
    influx: bool = True
    """False: leave InfluxDB alone (restore files only)."""
    check_only: bool = False
    """Only check the backup against its manifest."""
    expect_sha256: str | None = None
    """The manifest's SHA-256 as the backup command printed it."""


def restore_backup(settings: Settings, source: Path, options: RestoreOptions) -> Restored:
    """Check the backup at ``source`` (a folder or a ``.tar.gz``) and restore it as ``options`` say."""
    if source.is_file() and source.name.endswith(TAR_SUFFIX):
        with tempfile.TemporaryDirectory(prefix="cds-restore-") as tmp:  # created 0700
            return _restore(settings, unpack(source, Path(tmp)), options, str(source))
    if not source.is_dir():
        raise BackupError(f"{source} is neither a backup folder nor a {TAR_SUFFIX} backup")
    return _restore(settings, source, options, str(source))


def _restore(settings: Settings, folder: Path, o: RestoreOptions, shown: str) -> Restored:
    manifest, digest = verify(folder, o.expect_sha256)
    report = Restored(backup=shown, created_at=manifest.created_at, cds_version=manifest.cds_version,
                      manifest_sha256=digest, files=len(manifest.files) + 1, checked_only=o.check_only,
                      sites_file_in_backup=manifest.sites_file)
    if o.check_only:
        return report
    queues = _queue_targets(manifest, o.gateway_queues)
    sites_file = Path(o.sites_file) if o.sites_file else None
    if sites_file is not None and manifest.sites_file is None:
        raise BackupError("--sites-file: this backup holds no sites file (the deployment had none)")
    for path in [*([sites_file] if sites_file is not None else []), *(dest for _, dest in queues)]:
        if path.exists():
            raise TargetError(f"{path} exists already: a restore never overwrites a file; nothing was restored")
    names: dict[str, str] = {}
    if o.influx and manifest.databases:
        renamed = {"readings": o.db, "accounts": o.accounts_db}
        names = {d.name: renamed[d.role] or d.name for d in manifest.databases}
        bad = [n for n in names.values() if not _DB_NAME_RE.fullmatch(n)]
        if bad:
            raise BackupError(f"database name {bad[0]!r} must match [A-Za-z0-9_-]{{1,64}}")
        url = o.target_url or settings.influx_url
        address = check_address(o.target_address or settings.influx_backup_address)
        require_absent(settings, url, list(names.values()))
        for n, d in enumerate(manifest.databases):
            try:
                restore_database(address, folder / d.folder, d.name, names[d.name])
            except BackupError as exc:
                done = [names[x.name] for x in manifest.databases[:n]]
                if done:  # influxd failed half-way (a full disk, a server gone): say what to clean up
                    raise BackupError(f"{exc}; database {', '.join(done)} was restored before the failure: drop "
                                      "it before trying again") from exc
                raise
        require_databases(settings, url, list(names.values()))
    if sites_file is not None and manifest.sites_file is not None:
        sites_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(sites_file, (folder / manifest.sites_file).read_bytes())
    for queue, dest in queues:
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # as the gateway creates its queue's folder
        copy_queue(folder / queue.file, dest)
    return msgspec.structs.replace(report, databases=names, sites_file=o.sites_file,
                                   gateway_queues=[str(dest) for _, dest in queues])
