"""``python -m backend [serve]`` runs the API + ingest with uvicorn; ``python -m backend hash-password`` prints a
password hash for ``BACKEND_USERS``; ``python -m backend broker-users`` writes the broker's dynamic-security file
from a gateway list (docs/operations.md, "Mosquitto security"); ``python -m backend health-check`` checks a running
deployment end to end (backend/healthcheck); ``python -m backend backup`` and ``restore`` save a deployment and
restore it into a fresh InfluxDB (backend/backup, docs/operations.md "Backup and restore"); ``python -m backend
homeassistant --site SITE`` publishes a site's meters to its Home Assistant (docs/homeassistant.md)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path

import msgspec
import uvicorn

from backend.accounts.passwords import hash_password
from backend.api.server import server_options
from backend.backup.cli import backup_command, restore_command
from backend.backup.restore import RestoreOptions
from backend.errors import ConfigError
from backend.healthcheck import probe
from backend.healthcheck.report import Thresholds, exit_code, render
from backend.homeassistant.bridge import run as run_homeassistant_bridge
from backend.ingest.broker_provisioning import broker_users
from backend.rollout.plan import PlanError, load_plan
from backend.rollout.run import Rollout
from backend.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description="CDS backend")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the API and the MQTT ingest (default)")
    hp = sub.add_parser("hash-password", help="print an scrypt hash for BACKEND_USERS")
    hp.add_argument("--stdin", action="store_true", help="read the password from stdin instead of a prompt")
    bu = sub.add_parser("broker-users", help="write Mosquitto's dynamic-security file from a gateway list; the "
                        "backend's user, password and share group come from BACKEND_MQTT_*")
    bu.add_argument("--gateways", type=Path, required=True, metavar="TOML",
                    help="the gateway list (deploy/mosquitto/gateways.toml.example)")
    bu.add_argument("--out", type=Path, help="dynamic-security file to write (mode 0600)")
    bu.add_argument("--commands", action="append", default=[], metavar="SITE/GATEWAY",
                    help="print the mosquitto_ctrl lines that add this listed gateway to a running broker")
    bu.add_argument("--ctrl", default="mosquitto_ctrl", metavar="PREFIX",
                    help="how those lines reach the broker as its admin (default: mosquitto_ctrl, which reads "
                         "its connection options from $XDG_CONFIG_HOME/mosquitto_ctrl or ~/.config/mosquitto_ctrl)")
    bu.add_argument("--show-passwords", action="store_true",
                    help="also print the passwords this run generated (on stderr)")
    hc = sub.add_parser("health-check", help="check a running deployment end to end (broker, InfluxDB, replicas, "
                        "gateways, data freshness, ANEEL/ONS age); exit 1 on any failure")
    hc.add_argument("--replica", action="append", default=[], metavar="URL",
                    help="a backend replica's base URL whose /ready is checked (repeatable)")
    hc.add_argument("--json", action="store_true", help="print the report as JSON")
    hc.add_argument("--gateway-window", type=float, default=2.0, metavar="S",
                    help="seconds to collect the gateways' retained status after subscribing (default 2)")
    hc.add_argument("--max-reading-age", type=float, default=3600, metavar="S",
                    help="a site whose newest reading is older fails (default 3600; a warning after 300)")
    bk = sub.add_parser("backup", help="back up InfluxDB's readings and accounts databases, the sites file and "
                        "gateway queues into a new private folder, with a manifest of checksums")
    bk.add_argument("--out", type=Path, required=True, metavar="DIR",
                    help="folder of the backups (created 0700); each backup is DIR/cds-backup-<UTC time>")
    bk.add_argument("--gateway-queue", type=Path, action="append", default=[], metavar="PATH",
                    help="also copy this gateway SQLite queue, consistently while the gateway runs (repeatable)")
    bk.add_argument("--keep", type=int, metavar="N",
                    help="after a successful backup keep the newest N backups in DIR, delete older ones "
                         "(default: delete none)")
    bk.add_argument("--tar", action="store_true", help="write one .tar.gz instead of a folder")
    bk.add_argument("--no-influx", action="store_true", help="leave InfluxDB out (gateway queues only)")
    rs = sub.add_parser("restore", help="check a backup against its manifest, then restore it into a fresh "
                        "InfluxDB and onto new paths")
    rs.add_argument("--from", dest="source", type=Path, required=True, metavar="BACKUP",
                    help="a backup folder or .tar.gz")
    rs.add_argument("--check", action="store_true", help="only check every file against the manifest")
    rs.add_argument("--expect-sha256", metavar="HEX", help="the manifest's SHA-256 as the backup command printed it")
    rs.add_argument("--target-url", metavar="URL",
                    help="HTTP API of the fresh InfluxDB (default BACKEND_INFLUX_URL, with its credentials)")
    rs.add_argument("--target-address", metavar="HOST:PORT",
                    help="its RPC address for influxd restore (default BACKEND_INFLUX_BACKUP_ADDRESS)")
    rs.add_argument("--db", metavar="NAME", help="restore the readings' database under this name")
    rs.add_argument("--accounts-db", metavar="NAME", help="restore the accounts database under this name")
    rs.add_argument("--gateway-queue", action="append", default=[], metavar="[SOURCE=]PATH",
                    help="restore the backup's gateway queue (SOURCE: its original path, when it holds several) "
                         "to PATH, which must not exist")
    rs.add_argument("--sites-file", metavar="PATH", help="restore the sites file to PATH, which must not exist")
    rs.add_argument("--no-influx", action="store_true", help="leave InfluxDB alone (restore files only)")
    sub.add_parser("notify", help="run the alert notifier (e-mail, webhook, ntfy); one per deployment")
    ro = sub.add_parser("rollout", help="replace backend replicas one at a time (blue-green per slot), rolling "
                        "back on its own when a new replica is not healthy in time")
    ro.add_argument("--plan", type=Path, required=True, metavar="TOML",
                    help="the slots and their start/stop commands (deploy/backend/rollout.example.toml)")
    ro.add_argument("--user", required=True, help="an operator or admin API user for the smoke check")
    ro.add_argument("--password-file", type=Path, required=True, help="a file holding that user's password")
    ro.add_argument("--json", action="store_true", help="print the outcome as JSON at the end")
    ha = sub.add_parser("homeassistant", help="publish a site's meters to its Home Assistant by MQTT discovery "
                        "(docs/homeassistant.md); runs until SIGTERM")
    ha.add_argument("--site", required=True, help="the site whose meters this bridge publishes")
    args = parser.parse_args(argv)

    if args.command == "hash-password":
        if args.stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass("Senha: ")
            if getpass.getpass("Repita a senha: ") != password:
                print("As senhas não conferem.", file=sys.stderr)
                return 2
        if not password:
            print("Senha vazia.", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0

    try:
        settings = get_settings()
        if args.command == "rollout":
            return _rollout(args.plan, args.user, args.password_file, as_json=args.json)
        if args.command == "notify":
            from backend.notify.notifier import run_notifier  # the API process never loads the notifier

            return run_notifier(settings)
        if args.command == "health-check":
            rep = asyncio.run(probe.run(settings, args.replica, Thresholds(
                readings_warn_s=min(300, args.max_reading_age), readings_fail_s=args.max_reading_age),
                gateway_window_s=args.gateway_window))
            print(msgspec.json.encode(rep).decode() if args.json else render(rep))
            return exit_code(rep)
        if args.command == "homeassistant":
            return run_homeassistant_bridge(settings, args.site)
        if args.command == "broker-users":
            if args.out is None and not args.commands:
                parser.error("broker-users needs --out and/or --commands")
            broker_users(args.gateways, settings=settings, out=args.out, commands_for=args.commands,
                         ctrl=args.ctrl, show_passwords=args.show_passwords)
            return 0
        if args.command == "backup":
            return backup_command(settings, args.out, gateway_queues=args.gateway_queue, keep=args.keep,
                                  archive=args.tar, influx=not args.no_influx)
        if args.command == "restore":
            return restore_command(settings, args.source, RestoreOptions(
                target_url=args.target_url, target_address=args.target_address, db=args.db,
                accounts_db=args.accounts_db, gateway_queues=tuple(args.gateway_queue), sites_file=args.sites_file,
                influx=not args.no_influx, check_only=args.check, expect_sha256=args.expect_sha256))
        edge = server_options(settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run("backend.api.app:create_app", factory=True, host=settings.host, port=settings.port,
                log_config=None, access_log=False, lifespan="on", **edge)
    return 0


def _rollout(plan_path: Path, user: str, password_file: Path, *, as_json: bool) -> int:
    try:
        plan = load_plan(plan_path)
        password = password_file.read_text(encoding="utf-8").strip()
    except (PlanError, OSError) as exc:
        print(f"rollout: {exc}", file=sys.stderr)
        return 2
    outcome = asyncio.run(Rollout(plan, (user, password)).run())
    if as_json:
        print(msgspec.json.encode(outcome).decode())
    print("rollout: done" if outcome.ok else "rollout: FAILED, rolled back", file=sys.stderr)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
