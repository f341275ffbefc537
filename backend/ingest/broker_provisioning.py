"""``python -m backend broker-users``: the operator's gateway list and password files in, the broker's
dynamic-security file (and mosquitto_ctrl lines for a running broker) out.

A thin file-handling shell around :mod:`backend.ingest.broker_users`, which holds every rule:

- passwords live one per file in the list's ``passwords_dir`` (``<user>`` for backend, ops, admin and the
  Home Assistant users, ``<site>.<gateway>`` for a gateway). A missing one is generated and created 0600 with
  ``O_EXCL``, and an existing one is never rewritten, so running the command again keeps every password a gateway
  already uses;
- the backend's user, password and share group come from the backend's own settings (``BACKEND_MQTT_USERNAME``,
  ``BACKEND_MQTT_PASSWORD[_FILE]``, ``BACKEND_MQTT_SHARE_GROUP``): the role is generated for the very group the
  replicas subscribe with, and a password the backend already has is the one the broker gets;
- the output is written 0600 under a temporary name and renamed, so a broker never reads half a file;
- passwords are printed only when asked (``--show-passwords``, only the ones this run generated, on stderr:
  stdout carries the mosquitto_ctrl lines, which may be piped into a shell).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterable
from pathlib import Path

from backend.errors import ConfigError
from backend.ingest.broker_users import (
    GatewayUser,
    UserList,
    add_gateway_commands,
    build_config,
    check_backend_identity,
    encode_config,
    load_user_list,
    service_usernames,
)
from backend.settings import Settings
from protocol import homeassistant as ha

_PASSWORD_BYTES = 24  # 32 URL-safe characters: typed by nobody, so as long as any config file accepts


class PasswordFiles:
    """One password per file under ``folder``: read when present, generated (0600, exclusive) when missing."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.generated: dict[str, tuple[Path, str]] = {}
        """User name -> (file, password) created by this run, for the report and ``--show-passwords``."""

    def path(self, file_name: str) -> Path:
        return self.folder / file_name

    def get(self, username: str, file_name: str) -> str:
        path = self.path(file_name)
        try:
            password = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return self._create(username, path)
        except OSError as exc:
            raise ConfigError(f"cannot read the password of {username} from {path}: {exc}") from exc
        if not password:
            raise ConfigError(f"the password file of {username} ({path}) is empty")
        return password

    def _create(self, username: str, path: Path) -> str:
        password = secrets.token_urlsafe(_PASSWORD_BYTES)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot create the password file of {username} ({path}): {exc}") from exc
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password + "\n")
        self.generated[username] = (path, password)
        return password


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` 0600 atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _find_gateway(users: UserList, wanted: str) -> GatewayUser:
    for gw in users.gateways:
        if gw.username == wanted:
            return gw
    raise ConfigError(f"{wanted} is not in the gateway list: add it there first, so the list stays the truth")


def broker_users(
    list_path: Path,
    *,
    settings: Settings,
    out: Path | None = None,
    commands_for: Iterable[str] = (),
    ctrl: str = "mosquitto_ctrl",
    show_passwords: bool = False,
) -> None:
    """Write the dynamic-security file to ``out`` and/or print the lines that add ``commands_for`` gateways
    (``site/gateway``) to a running broker. ConfigError says what is wrong."""
    try:
        users = load_user_list(list_path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the gateway list {list_path}: {exc}") from exc
    backend_user = settings.mqtt_username
    service_usernames(users, backend_user)
    files = PasswordFiles((list_path.parent / users.passwords_dir).resolve())
    wanted = [_find_gateway(users, name) for name in commands_for]

    if out is not None:
        check_backend_identity(backend_user, settings.mqtt_share_group)
        passwords = {gw.username: files.get(gw.username, gw.password_file_name) for gw in users.gateways}
        for name in (users.ops_username, users.admin_username, users.notifier_username):
            if name:
                passwords[name] = files.get(name, name)
        passwords[backend_user] = settings.mqtt_password or files.get(backend_user, backend_user)
        for site in users.homeassistant_sites:  # file name = user name: '@' is in no other user's name
            for name in (ha.bridge_username(site), ha.ha_username(site)):
                passwords[name] = files.get(name, name)
        config = build_config(users, backend_user, settings.mqtt_share_group, passwords,
                              discovery_root=settings.homeassistant_discovery_root)
        _write_private(out, encode_config(config))
        print(f"wrote {out}: {len(users.gateways)} gateways, backend user {backend_user!r} in share group "
              f"{settings.mqtt_share_group!r}", file=sys.stderr)
    for gw in wanted:
        files.get(gw.username, gw.password_file_name)
        print(f"# add {gw.username} to a running broker (client id {gw.resolved_client_id})")
        for line in add_gateway_commands(gw, str(files.path(gw.password_file_name)), ctrl):
            print(line)
    for username, (path, password) in files.generated.items():
        shown = f": {password}" if show_passwords else ""  # stderr: stdout may be piped into sh
        print(f"new password for {username} in {path}{shown}", file=sys.stderr)
