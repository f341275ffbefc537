"""InfluxDB's side of a backup: ``influxd backup -portable`` and ``influxd restore -portable``, and the HTTP checks
around them.

Why influxd's own tool rather than a ``SELECT *`` export: it copies the shards (TSM files, with what is still in
the write cache snapshotted first) and the database's metadata — retention policies with their durations, shard
groups — exactly, in the portable format that any InfluxDB 1.x OSS (and Enterprise) restores; an export through
the query API would be slow, heavy on the server and lose the retention policies. It speaks influxd's RPC service
(``bind-address``, default 127.0.0.1:8088, ``BACKEND_INFLUX_BACKUP_ADDRESS``), which has no authentication, so
it must stay on loopback and the command runs on the InfluxDB machine. InfluxDB 2.x and 3.x have other tools
(``influx backup``); docs/operations.md says so.

The portable format carries databases, not InfluxDB's users: the restored server needs its admin user (and the
backend's user, if it is not that admin) created as on any new server; the backend recreates its READ-only
console user at start-up.

The HTTP checks make the errors readable and the restore all-or-nothing: before a backup, both databases must
exist (influxd answers a missing one with a bare "EOF"); before a restore, the target must hold none of the
databases to restore (influxd would refuse the second one only after restoring the first).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Final

from backend.backup.errors import BackupError, TargetError
from backend.backup.manifest import redacted
from backend.errors import InfluxError
from backend.settings import Settings
from backend.store.influx import InfluxClient

_ADDRESS_RE: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})")
_TIMEOUT_S: Final = 6 * 3600.0
"""A backup of years of readings takes minutes; a hung influxd must still not hold the timer's unit forever."""


def check_address(address: str) -> str:
    """``address`` when it is a ``host:port`` influxd accepts; BackupError otherwise."""
    m = _ADDRESS_RE.fullmatch(address)
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise BackupError(f"InfluxDB RPC address {address!r} is not host:port (BACKEND_INFLUX_BACKUP_ADDRESS, "
                          "influxd's bind-address, default 127.0.0.1:8088)")
    return address


def _influxd() -> str:
    binary = shutil.which("influxd")
    if binary is None:
        raise BackupError("influxd not found on PATH: backups use InfluxDB 1.x's own tool (Debian package influxdb)")
    return binary


def _run(args: list[str], what: str) -> None:
    try:
        result = subprocess.run([_influxd(), *args], capture_output=True, text=True, timeout=_TIMEOUT_S,
                                check=False)
    except subprocess.TimeoutExpired as exc:
        raise BackupError(f"{what}: influxd did not finish in {_TIMEOUT_S:.0f} s") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-1500:]
        raise BackupError(f"{what} failed (influxd exit {result.returncode}): {tail}")


def backup_database(address: str, db: str, dest: Path) -> None:
    """Portable backup of database ``db`` into the new folder ``dest``."""
    _run(["backup", "-portable", "-host", check_address(address), "-db", db, str(dest)],
         f"backup of database {db} from {address}")


def restore_database(address: str, source: Path, db: str, new_db: str) -> None:
    """Restore database ``db`` of the portable backup in ``source`` as ``new_db`` (which must not exist)."""
    _run(["restore", "-portable", "-host", check_address(address), "-db", db, "-newdb", new_db, str(source)],
         f"restore of database {db} as {new_db} into {address}")


def databases(settings: Settings, url: str) -> set[str]:
    """The databases of the InfluxDB at ``url`` (HTTP API, the settings' credentials)."""

    async def show() -> set[str]:
        async with InfluxClient(url, username=settings.influx_username, password=settings.influx_password,
                                token=settings.influx_token, timeout=settings.influx_timeout_s) as client:
            return {str(row["name"]) for row in await client.rows("SHOW DATABASES", epoch=None)}

    try:
        return asyncio.run(show())
    except InfluxError as exc:
        raise BackupError(f"InfluxDB at {redacted(url)} cannot list its databases: {exc}") from exc


def require_databases(settings: Settings, url: str, names: list[str]) -> None:
    """BackupError unless every one of ``names`` exists at ``url``."""
    missing = sorted(set(names) - databases(settings, url))
    if missing:
        raise BackupError(f"InfluxDB at {redacted(url)} has no database {', '.join(missing)} (has the backend run once "
                          "against it? BACKEND_INFLUX_DB and BACKEND_ACCOUNTS_DB name them)")


def require_absent(settings: Settings, url: str, names: list[str]) -> None:
    """TargetError when any of ``names`` exists at ``url`` already: a restore goes into a fresh InfluxDB."""
    present = sorted(set(names) & databases(settings, url))
    if present:
        raise TargetError(f"InfluxDB at {redacted(url)} already has database {', '.join(present)}: restore into a "
                          "fresh InfluxDB, or under other names (--db, --accounts-db); nothing was restored")
