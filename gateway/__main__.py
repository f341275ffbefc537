"""Command line: ``python -m gateway run --config gateway.toml`` and ``python -m gateway monitor PORT``."""

from __future__ import annotations

import argparse
import logging
import sys

import msgspec

from gateway import settings as settings_mod
from gateway.app import Gateway
from gateway.errors import GatewayError
from gateway.monitor import monitor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description="CDS Raspberry Pi gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway")
    run.add_argument(
        "--config", "-c", help="TOML file (default: $GATEWAY_CONFIG; GATEWAY_* environment variables override it)"
    )
    run.add_argument("--check", action="store_true", help="validate the configuration, print it and exit")
    mon = sub.add_parser("monitor", help="decode and print a meter's frames")
    mon.add_argument("port", help="serial port, e.g. /dev/serial/by-id/usb-...")
    mon.add_argument("--baudrate", type=int, default=115200)
    mon.add_argument("--ack", action="store_true", help="ACK readings (the meter then forgets them)")
    mon.add_argument("--count", type=int, default=0, help="stop after this many frames")
    mon.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds")
    args = parser.parse_args(argv)

    if args.command == "monitor":
        return monitor(args.port, baudrate=args.baudrate, ack=args.ack, count=args.count, duration=args.duration)

    try:
        settings = settings_mod.load(args.config or settings_mod.config_path_from_env())
    except GatewayError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        shown = msgspec.to_builtins(settings)
        for section in ("mqtt", "status"):
            if shown[section].get("password"):
                shown[section]["password"] = "***"
        print(msgspec.json.format(msgspec.json.encode(shown)).decode())
        return 0
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        gw = Gateway(settings)
    except GatewayError as exc:
        logging.getLogger("gateway").error("%s", exc)
        return 1
    gw.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
