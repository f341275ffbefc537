"""A backup on disk: a private folder while it is written, its files' checksums, the archive, the pruning.

Permissions: a backup holds every reading, every user's password hash and the audit log, so it is as private as
the databases: folders 0700 and files 0600 from creation (the commands run under umask 077), and
:func:`tighten` corrects what a tool made otherwise (``influxd backup`` writes its ``.meta`` file 0644).

A backup is written under a hidden ``.partial`` name and renamed when complete (:func:`publish`), so a backup cut
short by a crash or a full disk is never mistaken for a good one, by an operator or by the pruning.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
from pathlib import Path

from backend.backup.errors import BackupError, DamagedBackupError
from backend.backup.manifest import MANIFEST, PARTIAL_SUFFIX, TAR_SUFFIX, FileEntry, safe_path

_UNREADABLE = "-"
"""The checksum recorded for an entry that is not a regular file (a symlink, a device): never a valid SHA-256,
so the check reports it as changed or added."""


def make_private_dir(path: Path) -> None:
    """Create ``path`` (not its parents) mode 0700; BackupError when it exists already."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError as exc:
        raise BackupError(f"{path} exists already") from exc
    except OSError as exc:
        raise BackupError(f"cannot create {path}: {exc}") from exc
    os.chmod(path, 0o700)  # mkdir's mode passes through the umask, which may be looser than ours


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` 0600 (it must not exist) with ``data``, flushed to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def tighten(folder: Path) -> None:
    """Folders 0700 and files 0600 under ``folder``, itself included."""
    os.chmod(folder, 0o700)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(Path(root, name), 0o700, follow_symlinks=False)
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                os.chmod(path, 0o600)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def scan(folder: Path) -> dict[str, FileEntry]:
    """Every file under ``folder`` but the manifest, with its size and SHA-256, keyed by its path inside."""
    out: dict[str, FileEntry] = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in [*sorted(files), *(d for d in dirs if Path(root, d).is_symlink())]:
            path = Path(root, name)
            rel = path.relative_to(folder).as_posix()
            if rel == MANIFEST:
                continue
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                out[rel] = FileEntry(path=rel, size=info.st_size, sha256=_sha256(path))
            else:
                out[rel] = FileEntry(path=rel, size=info.st_size, sha256=_UNREADABLE)
    return out


def read_manifest(folder: Path) -> bytes:
    """The bytes of the backup's ``manifest.json``; DamagedBackupError when there is none."""
    path = folder / MANIFEST
    if path.is_symlink() or not path.is_file():
        raise DamagedBackupError(f"{folder} has no {MANIFEST}: not a CDS backup, or an incomplete one")
    return path.read_bytes()


def size_of(folder: Path) -> int:
    """Bytes of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def partial_path(out: Path, name: str) -> Path:
    """Where backup ``name`` is written until it is complete."""
    return out / f".{name}{PARTIAL_SUFFIX}"


def publish(partial: Path, final: Path, *, archive: bool) -> Path:
    """Give the complete backup in ``partial`` its final name, as a folder or as ``<final>.tar.gz``."""
    if not archive:
        os.rename(partial, final)
        return final
    target = final.with_name(final.name + TAR_SUFFIX)
    tmp = partial.with_name(partial.name + TAR_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            tar.add(partial, arcname=final.name)
            raw.flush()
            os.fsync(raw.fileno())
        os.rename(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    shutil.rmtree(partial)
    return target


def unpack(archive: Path, into: Path) -> Path:
    """Extract a ``.tar.gz`` backup into the private folder ``into``; the backup folder inside it.

    Only folders and regular files with paths that stay inside ``into`` are accepted (no links, devices,
    absolute paths or ``..``), and each is created here 0700/0600 by this code rather than by ``extractall``,
    which would apply the archive's owners and modes (Debian 12's Python 3.11.2 predates tarfile's filters)."""
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                if not (member.isdir() or member.isfile()) or not safe_path(member.name.rstrip("/")):
                    raise DamagedBackupError(f"{archive} holds {member.name!r}, which no CDS backup holds")
                path = into / member.name
                if member.isdir():
                    path.mkdir(mode=0o700, parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has content
                with source, os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DamagedBackupError(f"{archive} cannot be unpacked: {exc}") from exc
    inside = list(into.iterdir())
    if len(inside) != 1 or not inside[0].is_dir():
        raise DamagedBackupError(f"{archive} does not hold exactly one backup folder")
    return inside[0]


def remove(path: Path) -> None:
    """Delete a pruned backup (folder or archive)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
