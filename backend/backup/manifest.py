"""What a CDS backup holds, how a restore checks it and which old backups to prune — without touching a disk.

A backup is one folder, ``cds-backup-<UTC time>`` (``cds-backup-20261202T031500Z``), or the same folder as a
``.tar.gz``::

    manifest.json                 this module's Manifest: when, which CDS, which settings, every file's SHA-256
    influx/<database>/...         influxd's portable backup of one database (its own manifest, .meta, shard files)
    state/<sites file name>       the sites file (BACKEND_SITES_FILE), when one is set
    gateway/<n>-<queue name>      a consistent copy of a gateway's SQLite queue, when asked

Checksums: the manifest lists every other file with its size and SHA-256, and a restore refuses a backup in
which any file differs, is missing or was added, before it touches its target. That catches a damaged disk, a
truncated copy and an edited file. It cannot catch someone who rewrote the manifest as well, since it sits beside
the files: for that, the backup command prints the manifest's own SHA-256 (kept in the journal, or wherever the
operator keeps it) and ``restore --expect-sha256`` checks it.

Pruning goes by the name alone: the time is in the name, a name that does not parse is never a backup of ours
(so ``--keep`` never deletes anything else in the folder), and a backup being written has another name
(``.cds-backup-….partial``) until it is complete, so it is neither counted nor pruned.

The manifest is a msgspec Struct: fields added later get defaults, so an older backup stays readable.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Final, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from backend.backup.errors import DamagedBackupError
from backend.settings import Settings

FORMAT: Final = 1
"""Version of the layout above; a restore refuses a newer one rather than half-understanding it."""
MANIFEST: Final = "manifest.json"
PREFIX: Final = "cds-backup-"
TAR_SUFFIX: Final = ".tar.gz"
PARTIAL_SUFFIX: Final = ".partial"
INFLUX_DIR: Final = "influx"
STATE_DIR: Final = "state"
GATEWAY_DIR: Final = "gateway"
_STAMP: Final = "%Y%m%dT%H%M%SZ"
_NAME_RE: Final = re.compile(r"cds-backup-(\d{8}T\d{6}Z)(\.tar\.gz)?")
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")


class FileEntry(msgspec.Struct, frozen=True):
    """One file of the backup: its path inside it ('/'-separated), size in bytes and SHA-256 (hex)."""

    path: str
    size: int
    sha256: str


class Database(msgspec.Struct, frozen=True):
    """An InfluxDB database and the folder holding influxd's portable backup of it."""

    role: Literal["readings", "accounts"]
    """``readings``: Settings.influx_db (readings, rollups, energy series, ANEEL and ONS data); ``accounts``:
    Settings.resolved_accounts_db() (users, grants, audit log, device book)."""
    name: str
    folder: str


class GatewayQueue(msgspec.Struct, frozen=True):
    """A gateway's SQLite queue, copied with SQLite's online backup API."""

    source: str
    """The path it was copied from (a restore may name it to pick this queue)."""
    file: str
    integrity: str
    """``PRAGMA integrity_check`` of the copy when it was made (``ok``)."""


class RecordedSettings(msgspec.Struct, frozen=True):
    """The settings a restore and an operator need to know; never a secret (no password, token or JWT key)."""

    influx_url: str
    influx_db: str
    accounts_db: str
    influx_backup_address: str
    retention_raw: str
    retention_1m: str
    retention_1h: str
    sites_file: str


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """``manifest.json`` of a backup."""

    format: int = FORMAT
    created_at: str
    """UTC, ISO 8601, the time in the backup's name."""
    cds_version: str
    hostname: str
    settings: RecordedSettings
    databases: list[Database] = []
    sites_file: str | None = None
    """Path of the sites file inside the backup; None when the deployment had none."""
    gateway_queues: list[GatewayQueue] = []
    files: list[FileEntry] = []


_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Manifest)


def encode(manifest: Manifest) -> bytes:
    """The manifest as indented JSON (people read it too)."""
    return msgspec.json.format(_encoder.encode(manifest), indent=2) + b"\n"


def decode(data: bytes) -> Manifest:
    """Parse ``manifest.json``; DamagedBackupError when it is not a CDS manifest of a format this code knows."""
    try:
        manifest = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DamagedBackupError(f"{MANIFEST} is unreadable or not a CDS backup manifest: {exc}") from exc
    if manifest.format > FORMAT:
        raise DamagedBackupError(f"{MANIFEST} has format {manifest.format}; this CDS reads up to {FORMAT} "
                                 "(restore with the CDS version that made it, or a newer one)")
    return manifest


def redacted(url: str) -> str:
    """``url`` without a user or password written into it, nor a query string (for the manifest and messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def recorded_settings(settings: Settings) -> RecordedSettings:
    """What the manifest keeps of the settings."""
    return RecordedSettings(
        influx_url=redacted(settings.influx_url), influx_db=settings.influx_db,
        accounts_db=settings.resolved_accounts_db(), influx_backup_address=settings.influx_backup_address,
        retention_raw=settings.retention_raw, retention_1m=settings.retention_1m,
        retention_1h=settings.retention_1h, sites_file=settings.sites_file)


# --- names and pruning -------------------------------------------------------------------------------------------


def backup_name(now: dt.datetime) -> str:
    """The folder name of a backup made at ``now`` (aware datetime), e.g. ``cds-backup-20261202T031500Z``."""
    return PREFIX + now.astimezone(dt.UTC).strftime(_STAMP)


def backup_time(name: str) -> dt.datetime | None:
    """The time in a backup's folder or archive name; None for any other name."""
    m = _NAME_RE.fullmatch(name)
    if m is None:
        return None
    try:
        return dt.datetime.strptime(m.group(1), _STAMP).replace(tzinfo=dt.UTC)
    except ValueError:  # 20261399T…: digits in the right places, still no date
        return None


def to_prune(names: Iterable[str], keep: int, current: str) -> list[str]:
    """The backups among ``names`` beyond the newest ``keep`` (oldest first), never ``current``: the one just
    made counts as kept even if a clock set back makes it look older than the rest."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    dated = sorted(((t, n) for n in names if n != current and (t := backup_time(n)) is not None), reverse=True)
    return [n for _, n in reversed(dated[keep - 1:])]


# --- checking a backup -------------------------------------------------------------------------------------------


def safe_path(path: str) -> bool:
    """A relative '/'-separated path that stays inside the backup (no '..', no absolute path, no empty part)."""
    parts = path.split("/")
    return bool(path) and "\\" not in path and "\x00" not in path and all(p not in ("", ".", "..") for p in parts)


def problems(manifest: Manifest, found: Mapping[str, FileEntry]) -> list[str]:
    """Every way the files ``found`` in a backup (path -> entry, the manifest itself left out) differ from its
    manifest, one readable line each; empty when the backup is intact."""
    out: list[str] = []
    listed: dict[str, FileEntry] = {}
    for entry in manifest.files:
        if not safe_path(entry.path) or entry.path == MANIFEST:
            out.append(f"the manifest lists a path outside the backup: {entry.path!r}")
        elif entry.path in listed:
            out.append(f"the manifest lists {entry.path} twice")
        elif not _SHA256_RE.fullmatch(entry.sha256):
            out.append(f"the manifest has no valid SHA-256 for {entry.path}")
        else:
            listed[entry.path] = entry
    for path in sorted(listed.keys() - found.keys()):
        out.append(f"missing: {path}")
    for path in sorted(found.keys() - listed.keys()):
        out.append(f"not in the manifest (added): {path}")
    for path in sorted(listed.keys() & found.keys()):
        want, got = listed[path], found[path]
        if want.size != got.size:
            out.append(f"changed: {path} ({got.size} bytes, the manifest says {want.size})")
        elif want.sha256 != got.sha256:
            out.append(f"changed: {path} (SHA-256 differs from the manifest)")
    references = [*(q.file for q in manifest.gateway_queues), *([manifest.sites_file] if manifest.sites_file else [])]
    out += [f"the manifest names {ref} but does not list it" for ref in references if ref not in listed]
    for db in manifest.databases:
        if not any(p.startswith(db.folder + "/") for p in listed):
            out.append(f"the manifest lists no file of database {db.name} ({db.folder}/)")
    return out
