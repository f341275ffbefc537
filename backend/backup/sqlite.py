"""A gateway's SQLite queue copied consistently, into a backup and back out of it.

Why SQLite's online backup API and not a file copy: a running gateway keeps its queue in WAL mode, so committed
readings live partly in ``queue.db`` and partly in ``queue.db-wal`` until a checkpoint; copying the two files one
after the other, while the gateway commits and checkpoints, can pair a database file with a WAL it never had —
a copy that fails ``integrity_check`` or silently lacks acknowledged readings. The backup API reads the database
as one snapshot: the whole copy is made in a single step, inside one read transaction, which in WAL mode never
blocks the gateway's writer (a copy made in several steps would start over each time the writer commits, and
under a steady stream of readings might never finish).

The copy is switched to the rollback journal (``journal_mode=DELETE``) so it is one self-contained file that a
checksum covers; the gateway turns WAL back on when it opens it. Every copy is checked with ``PRAGMA
integrity_check`` before it counts. The same function restores a queue: the backup's file is the source, the
restored path the destination.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from backend.backup.errors import BackupError, TargetError


def copy_queue(source: Path, dest: Path) -> str:
    """Copy the SQLite database ``source`` (possibly being written) to the new file ``dest``, created 0600;
    return its integrity check (``ok``). BackupError when ``source`` is missing or not a sound SQLite file."""
    if not source.is_file():
        raise BackupError(f"gateway queue {source} does not exist")
    for path in (dest, Path(f"{dest}-wal"), Path(f"{dest}-shm")):
        if path.exists():
            raise TargetError(f"{path} exists already: stop the gateway and move its queue aside first")
    # created before SQLite would create it with the process's umask; SQLite gives any -journal the same mode
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        # mode=rw: a path that vanished is an error, not a new empty database
        with contextlib.closing(sqlite3.connect(source.resolve().as_uri() + "?mode=rw", uri=True,
                                                timeout=30.0)) as src, \
                contextlib.closing(sqlite3.connect(dest, isolation_level=None)) as dst:
            src.backup(dst, pages=-1)  # one step: one consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")
            result = "; ".join(str(row[0]) for row in dst.execute("PRAGMA integrity_check").fetchall())
    except sqlite3.Error as exc:
        dest.unlink(missing_ok=True)
        raise BackupError(f"cannot copy gateway queue {source}: {exc}") from exc
    if result != "ok":
        dest.unlink(missing_ok=True)
        raise BackupError(f"the copy of gateway queue {source} fails SQLite's integrity check: {result[:500]}")
    return result
