"""The backup package's exceptions: the commands print their message and exit non-zero."""

from __future__ import annotations

from backend.errors import BackendError


class BackupError(BackendError):
    """A backup or a restore could not be done; the message says why and what to do."""


class DamagedBackupError(BackupError):
    """The backup is not what its manifest says (a file changed, missing or added, or an unreadable manifest):
    nothing was restored."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class TargetError(BackupError):
    """A restore target already holds data (a database, a file) that the restore would overwrite: nothing was
    restored."""
