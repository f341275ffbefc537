"""The local run's users and secrets, made as an operator makes them, and kept owner-only from their first byte.

Why: the demo used to run an anonymous broker and an InfluxDB without authentication, so what a newcomer saw
working was not what CDS ships, and everything it wrote (readings, the queue, the JWT secret) was readable by every
user of the machine. ``python -m devstack`` now runs the shipped security:

- Mosquitto with the dynamic-security plugin (deploy/mosquitto/conf.d/security.conf) and a file made by the
  operator's own command, ``python -m backend broker-users``, from a gateway list: the demo's gateway may publish
  under its own prefix only and connect only with its own client id; the backend's user is the only member of its
  share group; ``ops`` reads everything and writes nothing (the banner's ``mosquitto_sub``). Nobody is anonymous.
- InfluxDB with authentication on: an admin user for the backend (it creates the databases, the retention
  policies and the console's user, as in deploy/compose) and the READ-only user of the admin's InfluxQL console.
- The API's JWT secret and the demo admin's password.

Every secret is a file under ``<state>/secrets`` (mode 0700), created 0600 with ``O_EXCL`` the first time and never
rewritten, so a restart keeps every password a running part already uses; the product reads them through its own
``*_FILE`` settings, never from the command line. :data:`PRIVATE_UMASK` is set by the launcher for itself and its
children, so what Mosquitto, InfluxDB, the gateway and the backend write in the state folder is owner-only too.
Nothing is chmod'ed after writing: a file that was world-readable for a moment may already have been read.

devstack runs the product as a black box (an import-linter contract): the broker's users come from running
``python -m backend broker-users``, never from importing it.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PRIVATE_UMASK: Final = 0o077
"""Files 0600 and folders 0700 for everything created after ``os.umask(PRIVATE_UMASK)``, children included."""

BACKEND_MQTT_USER: Final = "backend"
OPS_MQTT_USER: Final = "ops"
INFLUX_ADMIN_USER: Final = "cds-admin"
INFLUX_CONSOLE_USER: Final = "cds-console"

_SECRET_BYTES: Final = 32  # 43 URL-safe characters; the JWT secret must be at least 32 bytes
_ADMIN_PASSWORD_BYTES: Final = 9  # the demo admin's password is typed by a person: 12 characters


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner may enter: created 0700, or closed if an earlier version left it open.

    Closing the folder (not its files) is the one permission change made after the fact: files of an older
    state folder then stay unreachable for anybody else, whatever their own modes."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, created 0600 (an existing file is truncated and keeps its mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def secret_file(path: Path, nbytes: int = _SECRET_BYTES) -> Path:
    """``path`` holding a random secret: created 0600 and exclusively when missing, never rewritten."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secrets.token_urlsafe(nbytes) + "\n")
    return path


def read_secret(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class DemoSecrets:
    """Where the local run's secrets live in the state folder, and how they are made.

    ``folder`` is ``<state>/secrets``; the broker's password files (written by ``python -m backend broker-users``)
    are in its ``mqtt/`` subfolder, named as that command names them.
    """

    folder: Path

    @property
    def admin_password(self) -> Path:
        """The demo admin's password for the dashboard and the API (printed by the banner)."""
        return self.folder / "admin-password"

    @property
    def jwt_secret(self) -> Path:
        return self.folder / "jwt-secret"

    @property
    def influx_admin_password(self) -> Path:
        return self.folder / "influx-admin-password"

    @property
    def influx_console_password(self) -> Path:
        return self.folder / "influx-console-password"

    @property
    def broker_users_list(self) -> Path:
        """The gateway list of ``python -m backend broker-users`` (deploy/mosquitto/gateways.toml.example)."""
        return self.folder / "broker-users.toml"

    @property
    def dynamic_security_file(self) -> Path:
        """The broker's users and roles (password hashes); the broker rewrites it when mosquitto_ctrl changes it."""
        return self.folder / "dynamic-security.json"

    def mqtt_password(self, username: str) -> Path:
        """A broker user's password file: ``<site>.<gateway>`` for a gateway ``<site>/<gateway>``."""
        return self.folder / "mqtt" / username.replace("/", ".")

    def create(self) -> None:
        """Make every missing secret except the broker's (see :meth:`make_broker_users`)."""
        private_dir(self.folder)
        secret_file(self.admin_password, _ADMIN_PASSWORD_BYTES)
        for path in (self.jwt_secret, self.influx_admin_password, self.influx_console_password):
            secret_file(path)

    def make_broker_users(self, site: str, gateway: str, backend_env: dict[str, str], cwd: Path) -> None:
        """Write the gateway list (one gateway) and run the operator's command on it.

        The command creates each missing password file 0600 and writes the dynamic-security file 0600; the
        backend's user and share group come from ``backend_env`` (``BACKEND_MQTT_*``), the variables the backend
        itself runs with, so the broker grants the very group the backend subscribes with. Run at every start:
        the list stays the source of truth and the passwords never change.
        """
        write_private(self.broker_users_list, (
            "# Written by python -m devstack: the broker's users of the local run (docs/operations.md,\n"
            '# "Mosquitto security"). Passwords are files in passwords_dir, made by python -m backend broker-users.\n'
            f'passwords_dir = "mqtt"\nops_username = "{OPS_MQTT_USER}"\nadmin_username = ""\n\n'
            f'[[gateways]]\nsite = "{site}"\ngateway = "{gateway}"\n'
        ))
        argv = [sys.executable, "-m", "backend", "broker-users", "--gateways", str(self.broker_users_list),
                "--out", str(self.dynamic_security_file)]
        done = subprocess.run(argv, env=backend_env, cwd=cwd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"python -m backend broker-users failed ({done.returncode}): {done.stderr.strip()}")
