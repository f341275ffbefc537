"""``python -m backend [serve]`` runs the API + ingest with uvicorn; ``python -m backend hash-password`` prints a
password hash for ``BACKEND_USERS``."""

from __future__ import annotations

import argparse
import getpass
import sys

import uvicorn

from backend.api.auth import hash_password
from backend.api.server import guarded_protocol
from backend.errors import ConfigError
from backend.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend", description="CDS backend")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the API and the MQTT ingest (default)")
    hp = sub.add_parser("hash-password", help="print an scrypt hash for BACKEND_USERS")
    hp.add_argument("--stdin", action="store_true", help="read the password from stdin instead of a prompt")
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
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run("backend.api.app:create_app", factory=True, host=settings.host, port=settings.port,
                log_config=None, access_log=False, lifespan="on", http=guarded_protocol(settings),
                limit_concurrency=settings.http_limit_concurrency, timeout_keep_alive=settings.http_keepalive_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
