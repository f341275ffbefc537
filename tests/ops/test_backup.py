"""``python -m backend backup`` and ``restore`` (backend/backup) against real InfluxDB servers, run as the operator
and the systemd timer run them: as a subprocess with ``BACKEND_*`` settings.

The round trip seeds a month of readings through the backend's own write path and a rollup pass, ANEEL's data
through the app's scheduled pull from the fake CKAN, a user with a site grant and a provisioned meter through the
admin API (so the audit log has entries too); backs it up; restores it into a second, fresh influxd; and then asks
both servers the same things: point counts of every measurement of both databases (readings per device
included), and through an app on each, ``consumo``, ``custo``, the users, the device book and the audit log —
and logs in on the restored one with the user's password. The other tests: a damaged or edited backup, or an
archive with a path leading outside, is refused before anything is restored (through the command once, its
variants through the same ``verify``); ``--keep`` prunes only older backups; a gateway queue copied while a writer
commits to it is consistent. Two small tests check the sans-IO rules of backend/backup/manifest.py directly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from backend.api.app import create_app
from backend.backup.errors import DamagedBackupError
from backend.backup.manifest import MANIFEST, FileEntry, Manifest, RecordedSettings, problems, to_prune
from backend.backup.restore import RestoreOptions, restore_backup, verify
from backend.settings import Settings
from backend.store.influx import InfluxClient
from backend.store.layout import ensure_schema
from backend.store.lineprotocol import reading_line
from devstack.aneel_fake import FakeCkan
from devstack.influxdb import InfluxService
from gateway.queue import DurableQueue, Row
from protocol.mqtt import Reading
from tests.analytics.test_api import DEV1, DEV2, JWT, load_month, sites_toml
from tests.ops.metricnames import REPO

PASSWORD = "senha-da-vera-restaurada"
SECRET = JWT  # the JWT key is in the backup's environment: it must not end up in the backup


def rpc_address(influx: InfluxService) -> str:
    """influxd's RPC ``bind-address`` (what ``influxd backup`` speaks), as devstack wrote it in the config."""
    m = re.search(r'^bind-address = "(.+)"$', influx.config_path.read_text(encoding="utf-8"), re.M)
    assert m, influx.config_path
    return m.group(1)


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m backend <args>`` with ``settings`` as its BACKEND_* environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    env.update({"BACKEND_INFLUX_URL": settings.influx_url, "BACKEND_INFLUX_DB": settings.influx_db,
                "BACKEND_INFLUX_BACKUP_ADDRESS": settings.influx_backup_address,
                "BACKEND_SITES_FILE": settings.sites_file, "BACKEND_JWT_SECRET": SECRET,
                "BACKEND_RETENTION_RAW": settings.retention_raw})
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def written(result: subprocess.CompletedProcess[str]) -> Path:
    assert result.returncode == 0, result.stdout + result.stderr
    m = re.search(r"^backup written: (\S+) \((\d+) files, (\d+) bytes, ([\d.]+) s\)$", result.stdout, re.M)
    assert m, result.stdout
    return Path(m.group(1))


def manifest_sha256(result: subprocess.CompletedProcess[str]) -> str:
    m = re.search(r"^manifest sha256: ([0-9a-f]{64})", result.stdout, re.M)
    assert m, result.stdout
    return m.group(1)


async def counts(url: str, db: str) -> dict[str, Any]:
    """Points of every field of every measurement in every retention policy of ``db``, per series."""
    out: dict[str, Any] = {}
    async with InfluxClient(url) as client:
        rps = [r["name"] for r in await client.rows(f'SHOW RETENTION POLICIES ON "{db}"', epoch=None)]
        names = [r["name"] for r in await client.rows("SHOW MEASUREMENTS", db=db, epoch=None)]
        for rp in rps:
            for name in names:
                for series in await client.query(f'SELECT count(*) FROM "{db}"."{rp}"."{name}" GROUP BY *', db=db):
                    key = f"{rp}.{name}." + ",".join(f"{k}={v}" for k, v in sorted(series.tags.items()))
                    out[key] = series.rows()
    return out


def admin(client: AsyncTestClient[Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.app.state.authenticator.issue('root', 'admin')}"}


async def answers(client: AsyncTestClient[Any], site: str) -> dict[str, Any]:
    """What the API says about the seeded month, its users, its device book and its audit log."""
    h = admin(client)
    out = {}
    for key, path, params in (
            ("consumo", "/api/v1/analytics/consumo",
             {"site": site, "inicio": "2026-04-16", "fim": "2026-05-15", "granularidade": "day"}),
            ("consumo_hora", "/api/v1/analytics/consumo",
             {"site": site, "inicio": "2026-05-01", "fim": "2026-05-01", "granularidade": "hour"}),
            ("custo", "/api/v1/analytics/custo", {"site": site, "referencia": "2026-05-02"}),
            ("usuarios", "/api/v1/admin/usuarios", {}),
            ("medidores", "/api/v1/admin/medidores", {}),
            ("auditoria", "/api/v1/admin/auditoria", {})):
        r = await client.get(path, headers=h, params=params)
        assert r.status_code == 200, (key, r.text)
        out[key] = timeless(r.json())
    return out


def timeless(answer: Any) -> Any:
    """``answer`` without the ages (``age_s``, ``attempt_age_s``: how old ANEEL's data is now, another number a
    second later)."""
    if isinstance(answer, dict):
        return {k: timeless(v) for k, v in answer.items() if not k.endswith("age_s")}
    if isinstance(answer, list):
        return [timeless(v) for v in answer]
    return answer


def app_settings(influx: InfluxService, db: str, sites: Path, fake: FakeCkan, *, sync: bool) -> Settings:
    return Settings(influx_url=influx.url, influx_db=db, influx_backup_address=rpc_address(influx),
                    jwt_secret=JWT, ingest_enabled=False, rollup_enabled=False, retention_raw="INF",
                    log_level="WARNING", sites_file=str(sites), aneel_base_url=fake.url, aneel_backoff_max_s=0.05,
                    aneel_sync_enabled=sync, alerts_enabled=False, ons_sync_enabled=False)


def private(path: Path) -> list[str]:
    """Everything under ``path`` that is not 0700 (folders) or 0600 (files)."""
    loose = []
    for p in [path, *path.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        if mode != (0o700 if p.is_dir() else 0o600):
            loose.append(f"{p}: {mode:o}")
    return loose


@pytest.fixture
def fake() -> Iterator[FakeCkan]:
    server = FakeCkan().start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def fresh_influx(tmp_path: Path) -> AsyncIterator[InfluxService]:
    """A second influxd, empty: the machine a deployment is restored onto."""
    service = InfluxService(tmp_path / "influx-restored")
    await asyncio.to_thread(service.start, 60)
    try:
        yield service
    finally:
        await asyncio.to_thread(service.stop)


@pytest.mark.asyncio
async def test_restore_into_a_fresh_influxdb_answers_like_the_original(
        influx: InfluxService, fresh_influx: InfluxService, fake: FakeCkan, unique_id: str, tmp_path: Path,
        wait_for_async: Any) -> None:
    site = unique_id.replace("_", "-")[:40]
    sites = tmp_path / "sites.toml"
    sites.write_text(sites_toml(site), encoding="utf-8")
    source = app_settings(influx, unique_id, sites, fake, sync=True)
    try:
        await load_month(source, site)  # ReadingStore.write + a RollupWorker pass
        app = create_app(source)
        async with AsyncTestClient(app) as client:
            svc = app.state.services.analytics
            await wait_for_async(lambda: svc.scheduler.last_report is not None and svc.scheduler.last_report.ok,
                                 timeout=20, what="first ANEEL sync")
            r = await client.post("/api/v1/admin/usuarios", headers=admin(client),
                                  json={"usuario": "vera", "senha": PASSWORD, "sites": {site: "viewer"}})
            assert r.status_code == 201, r.text
            r = await client.put(f"/api/v1/admin/medidores/{DEV2}", headers=admin(client),
                                 json={"site": site, "gateway": "gw2"})
            assert r.status_code == 200, r.text

        result = await asyncio.to_thread(cli, source, "backup", "--out", str(tmp_path / "backups"))
        backup = written(result)
        print(result.stdout.strip())  # the figures for the report: files, bytes, seconds
        assert private(tmp_path / "backups") == []
        manifest = json.loads((backup / MANIFEST).read_text(encoding="utf-8"))
        assert {d["role"]: d["name"] for d in manifest["databases"]} == {
            "readings": unique_id, "accounts": source.resolved_accounts_db()}
        assert manifest["sites_file"] == "state/sites.toml" and manifest["settings"]["influx_db"] == unique_id
        every_file = b"".join(p.read_bytes() for p in backup.rglob("*") if p.is_file())
        assert SECRET.encode() not in every_file

        target = Settings(influx_url=fresh_influx.url, influx_backup_address=rpc_address(fresh_influx),
                          sites_file="")
        restored_sites = tmp_path / "restored" / "sites.toml"
        restored_sites.parent.mkdir()
        started = time.monotonic()
        result = await asyncio.to_thread(cli, target, "restore", "--from", str(backup), "--sites-file",
                                         str(restored_sites))
        assert result.returncode == 0, result.stdout + result.stderr
        print(f"restore: {time.monotonic() - started:.1f} s (the command, interpreter start included)")
        assert restored_sites.read_text(encoding="utf-8") == sites.read_text(encoding="utf-8")

        for db in (unique_id, source.resolved_accounts_db()):
            before, after = await counts(influx.url, db), await counts(fresh_influx.url, db)
            assert before and after == before, db
        raw = (await counts(fresh_influx.url, unique_id))
        per_device = {k: v[0]["count_p"] for k, v in raw.items() if k.startswith("raw.readings.")}
        assert sorted(per_device.values()) == [30 * 96 + 1] * 2 and len(per_device) == 2, per_device

        restored = app_settings(fresh_influx, unique_id, restored_sites, fake, sync=False)
        original = app_settings(influx, unique_id, sites, fake, sync=False)
        async with AsyncTestClient(create_app(original)) as a, AsyncTestClient(create_app(restored)) as b:
            want, got = await answers(a, site), await answers(b, site)
            assert got == want
            assert want["consumo"]["kwh_total"] == 420.0 and want["custo"]["conta"]["total"] == "528.28"
            assert [u["usuario"] for u in want["usuarios"]] == ["vera"]
            assert {m["medidor"]: (m["gateway"], m["origem"]) for m in want["medidores"]}[DEV2] == ("gw2", "admin")
            assert len(want["auditoria"]) >= 2
            r = await b.post("/api/v1/auth/token", json={"username": "vera", "password": PASSWORD})
            assert r.status_code == 200, r.text
    finally:
        async with InfluxClient(influx.url) as c:
            for db in (unique_id, source.resolved_accounts_db()):
                await c.execute(f'DROP DATABASE "{db}"', epoch=None)


# --- a small backup for the checks below ----------------------------------------------------------------------


@pytest.fixture
def small(influx: InfluxService, unique_id: str, tmp_path: Path) -> Iterator[Settings]:
    """A readings database with a day of one meter and an empty accounts database on the session influxd."""
    sites = tmp_path / "sites.toml"
    sites.write_text(sites_toml("casa-pequena"), encoding="utf-8")
    settings = Settings(influx_url=influx.url, influx_db=unique_id, influx_backup_address=rpc_address(influx),
                        retention_raw="INF", sites_file=str(sites))

    async def seed() -> None:
        async with InfluxClient(influx.url) as client:
            await ensure_schema(client, settings)
            await client.execute(f'CREATE DATABASE "{settings.resolved_accounts_db()}"', epoch=None)
            start = int(dt.datetime(2026, 5, 1, tzinfo=dt.UTC).timestamp() * 1000)
            await client.write([reading_line("casa-pequena", "gw1", Reading(
                device=DEV1, boot=1, seq=i, ts=start + i * 60_000, vrms=127.0, irms=1.0, p=100.0, s=110.0, pf=0.9,
                freq=60.0, energy_mwh=i * 1_700)) for i in range(1440)], unique_id)

    asyncio.run(seed())
    yield settings
    influx.query(f'DROP DATABASE "{unique_id}"', epoch=None)
    influx.query(f'DROP DATABASE "{settings.resolved_accounts_db()}"', epoch=None)


def refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 3, result.stdout + result.stderr
    assert "refused: the backup is damaged or was tampered with, nothing was restored" in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_tampered_backup_is_refused_before_anything_is_restored(small: Settings, influx: InfluxService,
                                                                tmp_path: Path) -> None:
    result = cli(small, "backup", "--out", str(tmp_path / "b"))
    backup, digest = written(result), manifest_sha256(result)
    assert verify(backup, digest)[1] == digest

    shard = sorted(backup.glob("influx/*/*.tar.gz"))[0]
    original = shard.read_bytes()
    shard.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])  # one bit
    rel = shard.relative_to(backup).as_posix()
    # the command refuses a real restore, exit code 3, before it touches the target
    other = "restored_" + small.influx_db
    refused(cli(small, "restore", "--from", str(backup), "--db", other, "--accounts-db", other + "_a"),
            f"changed: {rel} (SHA-256 differs")
    assert other not in {r["name"] for r in influx.rows("SHOW DATABASES", epoch=None)}
    shard.write_bytes(original)

    # the other ways a backup can differ from its manifest, checked as the command checks them
    (backup / "state" / "extra.toml").write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(DamagedBackupError) as caught:
        verify(backup)
    assert caught.value.problems == ["not in the manifest (added): state/extra.toml"]
    (backup / "state" / "extra.toml").unlink()
    sites = backup / "state" / "sites.toml"
    kept = sites.read_bytes()
    sites.unlink()
    with pytest.raises(DamagedBackupError) as caught:
        verify(backup)
    assert caught.value.problems == ["missing: state/sites.toml"]
    sites.write_bytes(kept[:-1])
    with pytest.raises(DamagedBackupError) as caught:
        verify(backup)
    assert caught.value.problems == [
        f"changed: state/sites.toml ({len(kept) - 1} bytes, the manifest says {len(kept)})"]

    # someone who edits a file and rewrites the manifest to match: only the SHA-256 printed at backup time catches it
    sites.write_bytes(kept.replace(b"0.24", b"0.01"))
    manifest = json.loads((backup / MANIFEST).read_text(encoding="utf-8"))
    for entry in manifest["files"]:
        if entry["path"] == "state/sites.toml":
            entry["sha256"], entry["size"] = hashlib.sha256(sites.read_bytes()).hexdigest(), sites.stat().st_size
    (backup / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    verify(backup)
    refused(cli(small, "restore", "--from", str(backup), "--check", "--expect-sha256", digest),
            "the manifest's SHA-256 is")


@pytest.mark.parametrize("member", ["../outside", "/etc/cds-evil", "cds-backup-20260101T000000Z/link"])
def test_archive_with_a_path_outside_or_a_link_is_refused(member: str, tmp_path: Path) -> None:
    archive = tmp_path / "cds-backup-20260101T000000Z.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        if member.endswith("link"):
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(DamagedBackupError, match="which no CDS backup holds"):
        restore_backup(Settings(), archive, RestoreOptions(check_only=True))
    assert not (tmp_path.parent / "outside").exists()


def test_keep_prunes_older_backups_only_after_a_good_one(small: Settings, tmp_path: Path) -> None:
    out = tmp_path / "backups"
    out.mkdir(mode=0o700)
    old = ["cds-backup-20260101T030000Z", "cds-backup-20260102T030000Z", "cds-backup-20260103T030000Z.tar.gz",
           "cds-backup-20260104T030000Z"]
    for name in old:
        if name.endswith(".tar.gz"):
            (out / name).write_bytes(b"old")
        else:
            (out / name).mkdir()
            (out / name / MANIFEST).write_text("{}", encoding="utf-8")
    bystanders = ["notes.txt", "cds-backup-latest", ".cds-backup-20260105T030000Z.partial"]
    for name in bystanders:
        (out / name).mkdir()

    broken = Settings(influx_url=small.influx_url, influx_db="no_such_database_here",
                      influx_backup_address=small.influx_backup_address, sites_file=small.sites_file)
    result = cli(broken, "backup", "--out", str(out), "--keep", "1")
    assert result.returncode == 1 and "has no database no_such_database_here" in result.stderr, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(old + bystanders)  # a failed backup prunes nothing

    result = cli(small, "backup", "--out", str(out), "--keep", "3", "--tar")
    archive = written(result)
    assert archive.name.endswith(".tar.gz") and archive.parent == out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [archive.name, "cds-backup-20260103T030000Z.tar.gz", "cds-backup-20260104T030000Z", *bystanders])
    assert [line for line in result.stdout.splitlines() if line.startswith("pruned:")] == [
        f"pruned: {out / 'cds-backup-20260101T030000Z'}", f"pruned: {out / 'cds-backup-20260102T030000Z'}"]
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    checked = cli(small, "restore", "--from", str(archive), "--check", "--expect-sha256", manifest_sha256(result))
    assert checked.returncode == 0, checked.stderr


def test_gateway_queue_copied_while_a_writer_commits_is_consistent(small: Settings, tmp_path: Path,
                                                                   wait_for: Any) -> None:
    path = tmp_path / "gateway" / "queue.db"
    queue = DurableQueue(str(path))
    batch = 50
    committed = [0]
    stop = threading.Event()
    payload = b'{"p": 123.4, "pad": "' + b"x" * 200 + b'"}'

    def rows(n: int) -> list[Row]:
        return [Row(DEV1, 1, n * batch + i, 1_700_000_000_000 + n * batch + i, payload) for i in range(batch)]

    for n in range(400):  # 20 000 rows, about 5 MB: the copy takes a while
        queue.commit(rows(n))
    committed[0] = 400

    def writer() -> None:
        while not stop.is_set():
            queue.commit(rows(committed[0]))
            committed[0] += 1

    thread = threading.Thread(target=writer, name="queue-writer")
    thread.start()
    try:
        wait_for(lambda: committed[0] > 450, what="the writer committing")
        before = committed[0]
        result = cli(small, "backup", "--out", str(tmp_path / "b"), "--no-influx", "--gateway-queue", str(path))
        after = committed[0]
    finally:
        stop.set()
        thread.join(30)
        queue.close()
    backup = written(result)
    assert after > before, "the writer did not commit during the backup"
    manifest = json.loads((backup / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["databases"] == [] and manifest["gateway_queues"] == [
        {"source": str(path.resolve()), "file": "gateway/1-queue.db", "integrity": "ok"}]

    restored = tmp_path / "restored" / "queue.db"
    result = cli(small, "restore", "--from", str(backup), "--no-influx", "--gateway-queue", str(restored))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(restored.stat().st_mode) == 0o600
    with sqlite3.connect(restored) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        count, top = db.execute("SELECT count(*), max(id) FROM readings").fetchone()
    # whole transactions only, and no hole: the copy is one snapshot of the queue as the writer left it
    assert before * batch <= count <= after * batch and count % batch == 0 and top == count, (before, count, after)
    reopened = DurableQueue(str(restored))  # the gateway opens it as its queue (and turns WAL back on)
    assert reopened.rows == count
    reopened.close()
    again = cli(small, "restore", "--from", str(backup), "--no-influx", "--gateway-queue", str(restored))
    assert again.returncode == 3 and "exists already" in again.stderr, again.stderr


# --- the sans-IO rules -----------------------------------------------------------------------------------------


def test_pruning_keeps_the_newest_and_the_current_and_ignores_other_names() -> None:
    names = ["cds-backup-20260103T000000Z", "cds-backup-20260101T000000Z.tar.gz", "cds-backup-20260102T000000Z",
             "cds-backup-20261399T000000Z", "cds-backup-20260104T000000Z.partial", "notes", "cds-backup-x"]
    assert to_prune(names, 2, "cds-backup-20260201T000000Z") == [
        "cds-backup-20260101T000000Z.tar.gz", "cds-backup-20260102T000000Z"]
    # a clock set back: the backup just made looks oldest, and is still the one kept
    assert to_prune(names, 1, "cds-backup-20250101T000000Z") == [
        "cds-backup-20260101T000000Z.tar.gz", "cds-backup-20260102T000000Z", "cds-backup-20260103T000000Z"]


def test_manifest_paths_outside_the_backup_and_references_to_unlisted_files_are_problems() -> None:
    sha = "0" * 64
    recorded = RecordedSettings(influx_url="", influx_db="cds", accounts_db="cds_accounts",
                                influx_backup_address="", retention_raw="", retention_1m="", retention_1h="",
                                sites_file="")
    manifest = Manifest(created_at="", cds_version="", hostname="", settings=recorded, sites_file="state/s.toml",
                        files=[FileEntry("../etc/passwd", 1, sha), FileEntry("/abs", 1, sha),
                               FileEntry("a/./b", 1, sha), FileEntry("ok", 1, sha), FileEntry("ok", 1, sha),
                               FileEntry("bad-sum", 1, "x")])
    found = {"ok": FileEntry("ok", 1, sha), "bad-sum": FileEntry("bad-sum", 1, "x")}
    assert problems(manifest, found) == [
        "the manifest lists a path outside the backup: '../etc/passwd'",
        "the manifest lists a path outside the backup: '/abs'",
        "the manifest lists a path outside the backup: 'a/./b'",
        "the manifest lists ok twice",
        "the manifest has no valid SHA-256 for bad-sum",
        "not in the manifest (added): bad-sum",
        "the manifest names state/s.toml but does not list it",
    ]
