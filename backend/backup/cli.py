"""``python -m backend backup`` and ``python -m backend restore``: run one, print what it did, exit with a code.

Exit codes: 0 done; 1 the backup or restore failed (InfluxDB unreachable, influxd missing, a disk error); 3 the
backup is damaged or was tampered with, or a restore target is not empty — nothing was restored. Messages are
English, for operators and the journal (the timer's unit logs there).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from backend.backup.create import create_backup
from backend.backup.errors import BackupError, DamagedBackupError, TargetError
from backend.backup.restore import RestoreOptions, restore_backup
from backend.settings import Settings

REFUSED = 3
_SHOWN_PROBLEMS = 20


def backup_command(settings: Settings, out: Path, *, gateway_queues: Sequence[Path], keep: int | None,
                   archive: bool, influx: bool) -> int:
    try:
        done = create_backup(settings, out, gateway_queues=gateway_queues, keep=keep, archive=archive,
                             influx=influx)
    except (BackupError, OSError) as exc:  # OSError: a full disk, a folder it may not write
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backup written: {done.path} ({done.files} files, {done.bytes} bytes, {done.seconds:.1f} s)")
    print(f"manifest sha256: {done.manifest_sha256}  (restore --expect-sha256 checks it)")
    for name in done.pruned:
        print(f"pruned: {out / name}")
    return 0


def restore_command(settings: Settings, source: Path, options: RestoreOptions) -> int:
    try:
        done = restore_backup(settings, source, options)
    except DamagedBackupError as exc:
        print(f"refused: the backup is damaged or was tampered with, nothing was restored: {exc}", file=sys.stderr)
        for line in exc.problems[:_SHOWN_PROBLEMS]:
            print(f"  - {line}", file=sys.stderr)
        if len(exc.problems) > _SHOWN_PROBLEMS:
            print(f"  … and {len(exc.problems) - _SHOWN_PROBLEMS} more", file=sys.stderr)
        return REFUSED
    except TargetError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return REFUSED
    except (BackupError, OSError) as exc:
        print(f"restore failed: {exc}", file=sys.stderr)
        return 1
    print(f"backup {done.backup}: made {done.created_at} by CDS {done.cds_version}, {done.files} files match "
          f"the manifest (sha256 {done.manifest_sha256})")
    if done.checked_only:
        return 0
    for old, new in done.databases.items():
        print(f"restored database {old} as {new}")
    if done.sites_file:
        print(f"restored the sites file to {done.sites_file}")
    elif done.sites_file_in_backup:
        print(f"the sites file stays in the backup ({done.sites_file_in_backup}); --sites-file PATH restores it")
    for path in done.gateway_queues:
        print(f"restored a gateway queue to {path}")
    if done.databases:
        print("next: start the backend against this InfluxDB (InfluxDB's own users are not in a backup)")
    return 0
