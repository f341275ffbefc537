"""``python -m backend [serve]`` runs the API + ingest with uvicorn; ``python -m backend hash-password`` prints a
password hash for ``BACKEND_USERS``; ``python -m backend broker-users`` writes the broker's dynamic-security file
from a gateway list (docs/operations.md, "Mosquitto security"); ``python -m backend health-check`` checks a running
deployment end to end (backend/healthcheck)."""

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
from backend.errors import ConfigError
from backend.healthcheck import probe
from backend.healthcheck.report import Thresholds, exit_code, render
from backend.ingest.broker_provisioning import broker_users
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
        if args.command == "health-check":
            rep = asyncio.run(probe.run(settings, args.replica, Thresholds(
                readings_warn_s=min(300, args.max_reading_age), readings_fail_s=args.max_reading_age),
                gateway_window_s=args.gateway_window))
            print(msgspec.json.encode(rep).decode() if args.json else render(rep))
            return exit_code(rep)
        if args.command == "broker-users":
            if args.out is None and not args.commands:
                parser.error("broker-users needs --out and/or --commands")
            broker_users(args.gateways, settings=settings, out=args.out, commands_for=args.commands,
                         ctrl=args.ctrl, show_passwords=args.show_passwords)
            return 0
        edge = server_options(settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run("backend.api.app:create_app", factory=True, host=settings.host, port=settings.port,
                log_config=None, access_log=False, lifespan="on", **edge)
    return 0


if __name__ == "__main__":
    sys.exit(main())
