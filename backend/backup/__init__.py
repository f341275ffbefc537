"""Backups of a CDS deployment and their restore: ``python -m backend backup`` and ``python -m backend restore``.

``manifest.py`` is the sans-IO core (what a backup holds, how a restore checks it, which old backups to prune);
``folder.py``, ``influx.py`` and ``sqlite.py`` are thin shells around the disk, ``influxd`` and SQLite;
``create.py`` and ``restore.py`` do the two jobs, ``cli.py`` prints their reports and picks the exit codes.
docs/operations.md ("Backup and restore") is the operator's side.
"""
