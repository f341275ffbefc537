"""Who may connect to the broker and what each one may do, as Mosquitto dynamic-security JSON (sans-IO).

Why dynamic security rather than ``acl_file``: Mosquitto 2.0.11 with an ACL file grants every SUBSCRIBE and
applies the read ACL only when it delivers. A gateway that subscribes to the backend's shared subscription
(``$share/<group>/cds/v1/+/+/up/readings``) with a persistent session becomes a member of the group: the broker
hands it its round-robin share of everyone's readings, refuses to deliver them and drops them, after having
PUBACKed the sending gateway, which then deletes them. The dynamic-security plugin (shipped with Mosquitto 2.0)
checks a SUBSCRIBE against the client's roles when it arrives, ``$share/<group>/`` prefix included, and answers
SUBACK 0x87: only the backend's role names its share-group filter, so nobody else can join the group.

Three limits of Mosquitto 2.0.11 shape what is built here:

- ACL topics take no ``%u``/``%c`` substitution, so every gateway gets a role of its own with its literal
  prefix ``cds/v1/<site>/<gateway>/``;
- the file holds PBKDF2 hashes, not passwords, so :func:`hash_password` computes them exactly as the plugin
  verifies them (and no hand-edited JSON is ever needed);
- Mosquitto hands a persistent session, share-group membership included, to whoever connects with its client
  id, whatever the user, so each gateway user is bound to its own client id (the plugin's ``clientid``).

Everything here is pure: the operator's command (:mod:`backend.ingest.broker_provisioning`) reads the list and
the password files and writes what this module returns.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Final, Literal

import msgspec

from backend.errors import ConfigError
from backend.ingest.adoption import presence_topic
from protocol import homeassistant as ha
from protocol import mqtt
from protocol.ids import Ident

AclType = Literal["publishClientSend", "publishClientReceive", "subscribeLiteral", "subscribePattern"]

PBKDF2_ITERATIONS: Final = 101
"""What mosquitto_ctrl and mosquitto_passwd use. The broker is single-threaded and hashes on every CONNECT, so a
much higher count would let a reconnect storm of gateways stall it; the passwords are random, not words."""
SALT_BYTES: Final = 12
"""The plugin's salt size: a salt of any other length makes it skip the client silently."""

SERVICE_USERNAME_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}\Z"
"""Backend, ops and admin user names. No ``/`` and no ``.``: gateway users are ``<site>/<gateway>`` and their
password files ``<site>.<gateway>``, so a service user can never collide with a gateway."""

CLIENT_ID_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,128}\Z"
"""A gateway's client id: it is also an argument of the mosquitto_ctrl lines, so nothing a shell interprets."""

SHARE_PREFIX: Final = "$share"
DYNSEC_CONTROL: Final = "$CONTROL/dynamic-security/#"


class GatewayUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One gateway: its MQTT user is ``<site>/<gateway>``, as gateway.toml has always named it."""

    site: Ident
    gateway: Ident
    client_id: str = ""
    """The only client id this user may connect with; empty = the gateway's default ``cds-gw-<site>-<gateway>``
    (gateway/settings.py). Set it when the gateway's ``mqtt.client_id`` is set."""

    @property
    def resolved_client_id(self) -> str:
        return self.client_id or f"cds-gw-{self.site}-{self.gateway}"

    @property
    def username(self) -> str:
        return f"{self.site}/{self.gateway}"

    @property
    def rolename(self) -> str:
        return f"gateway/{self.site}/{self.gateway}"

    @property
    def password_file_name(self) -> str:
        return f"{self.site}.{self.gateway}"


class UserList(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The declarative list an operator edits (``gateways.toml``); no password is ever in it."""

    passwords_dir: str = "passwords"
    """Folder of one password file per user, relative to the list's own folder."""
    ops_username: str = "ops"
    """Read-only debugging user (``""`` = none)."""
    admin_username: str = "cds-admin"
    """Dynamic-security administrator, for mosquitto_ctrl on a running broker (``""`` = none)."""
    notifier_username: str = ""
    """The notifier's user (``python -m backend notify``): reads the alert lists, nothing else (``""`` = none)."""
    gateways: list[GatewayUser] = msgspec.field(default_factory=list)
    homeassistant_sites: list[Ident] = msgspec.field(default_factory=list)
    """Sites whose Home Assistant bridge is on (docs/homeassistant.md): each gets a bridge user and a Home
    Assistant user, both confined to that site. Empty (the default) = no Home Assistant user at all."""


class Acl(msgspec.Struct, frozen=True):
    acltype: AclType
    topic: str
    allow: bool = True  # written out: the plugin reads a missing "allow" as deny


class Role(msgspec.Struct, frozen=True):
    rolename: str
    textname: str
    acls: list[Acl]


class RoleRef(msgspec.Struct, frozen=True):
    rolename: str


class Client(msgspec.Struct, frozen=True, omit_defaults=True):
    username: str
    textname: str
    password: str
    salt: str
    iterations: int
    roles: list[RoleRef]
    clientid: str = ""
    """When set, the plugin refuses this user under any other client id (omitted = any id)."""


class DefaultAccess(msgspec.Struct, frozen=True):
    """What a client may do that none of its roles mentions: nothing but unsubscribe."""

    publishClientSend: bool = False  # camelCase: the plugin's key names
    publishClientReceive: bool = False
    subscribe: bool = False
    unsubscribe: bool = True


class DynSecConfig(msgspec.Struct, frozen=True):
    """The plugin's file (``plugin_opt_config_file``)."""

    clients: list[Client]
    roles: list[Role]
    defaultACLAccess: DefaultAccess = msgspec.field(default_factory=DefaultAccess)


_json_encoder: Final = msgspec.json.Encoder()


def load_user_list(data: bytes | str) -> UserList:
    """Decode and check a ``gateways.toml``; ConfigError says what is wrong."""
    try:
        users = msgspec.toml.decode(data, type=UserList)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"gateway list: {exc}") from exc
    for name, value in (("ops_username", users.ops_username), ("admin_username", users.admin_username),
                        ("notifier_username", users.notifier_username)):
        if value and not re.match(SERVICE_USERNAME_PATTERN, value):
            raise ConfigError(f"gateway list: {name} {value!r} must match [A-Za-z0-9_-]{{1,64}}")
    seen: set[str] = set()
    for gw in users.gateways:
        if not re.match(CLIENT_ID_PATTERN, gw.resolved_client_id):
            raise ConfigError(f"gateway list: {gw.username}: client id {gw.resolved_client_id!r} must match "
                              "[A-Za-z0-9_.-]{1,128}")
        for key in (gw.username, gw.resolved_client_id):  # ids like a-b/c and a/b-c share cds-gw-a-b-c
            if key in seen:
                raise ConfigError(f"gateway list: {key} appears twice")
            seen.add(key)
    for site in users.homeassistant_sites:
        for key in (ha.bridge_username(site), ha.ha_username(site), ha.bridge_client_id(site), ha.ha_client_id(site)):
            if key in seen:  # a site listed twice, or a gateway's client_id set to a Home Assistant one
                raise ConfigError(f"gateway list: {key} (Home Assistant of {site}) appears twice")
            seen.add(key)
    return users


def check_backend_identity(username: str, share_group: str) -> None:
    """The backend's user name must be a service name; the group is checked by the backend's settings."""
    if not re.match(SERVICE_USERNAME_PATTERN, username):
        raise ConfigError("BACKEND_MQTT_USERNAME must be set (the broker admits no anonymous client) and match "
                          "[A-Za-z0-9_-]{1,64}")
    if "/" in share_group or "+" in share_group or "#" in share_group:
        raise ConfigError(f"share group {share_group!r} is not a single topic level")


def service_usernames(users: UserList, backend_username: str) -> list[str]:
    """The non-gateway users, backend first; ConfigError when two of them share a name."""
    names = [n for n in (backend_username, users.ops_username, users.admin_username, users.notifier_username) if n]
    if len(set(names)) != len(names):
        raise ConfigError(f"backend, ops and admin users need distinct names, got {names}")
    return names


# --- roles -----------------------------------------------------------------------------------------------------


def gateway_acls(site: str, gateway: str) -> list[Acl]:
    """Publish its own state and uplink; read its own downlink. Nothing else, not even another site's topics."""
    prefix = f"{mqtt.ROOT}/{site}/{gateway}"
    return [
        Acl("publishClientSend", f"{prefix}/status"),
        Acl("publishClientSend", f"{prefix}/devices/+"),
        Acl("publishClientSend", f"{prefix}/up/readings"),
        Acl("publishClientSend", f"{prefix}/up/config-result"),
        Acl("subscribePattern", f"{prefix}/down/#"),
        Acl("publishClientReceive", f"{prefix}/down/#"),
    ]


def backend_acls(share_group: str) -> list[Acl]:
    """Readings only through the share group; state topics plainly (retained messages never reach a shared
    subscription); downlink, dead letters, alerts and the presence of its own group."""
    presence = presence_topic(share_group, "+")
    reads = [mqtt.READINGS_FILTER, mqtt.STATUS_FILTER, mqtt.DEVICES_FILTER, mqtt.CONFIG_RESULT_FILTER, presence]
    return [
        Acl("subscribeLiteral", f"{SHARE_PREFIX}/{share_group}/{mqtt.READINGS_FILTER}"),
        Acl("subscribeLiteral", mqtt.STATUS_FILTER),
        Acl("subscribeLiteral", mqtt.DEVICES_FILTER),
        Acl("subscribeLiteral", mqtt.CONFIG_RESULT_FILTER),
        Acl("subscribeLiteral", presence),
        *(Acl("publishClientReceive", topic) for topic in reads),
        Acl("publishClientSend", f"{mqtt.ROOT}/+/+/down/#"),
        Acl("publishClientSend", f"{mqtt.DEAD_LETTER_ROOT}/#"),
        Acl("publishClientSend", f"{mqtt.ROOT}/+/alerts"),
        Acl("publishClientSend", presence),
    ]


def ops_acls() -> list[Acl]:
    """Read everything under cds/v1 and $SYS with plain subscriptions. A pattern never matches a filter that
    starts with ``$share/``, so ops cannot join (and drain) a share group by mistake."""
    return [
        Acl("subscribePattern", f"{mqtt.ROOT}/#"),
        Acl("publishClientReceive", f"{mqtt.ROOT}/#"),
        Acl("subscribePattern", "$SYS/#"),
        Acl("publishClientReceive", "$SYS/#"),
    ]


def homeassistant_bridge_acls(site: str, root: str) -> list[Acl]:
    """Read the site's readings and DeviceInfo and Home Assistant's birth; write discovery and state for this site
    only. Literal filters: ``$share/<group>/...`` never equals one of them, so the bridge can never join the
    backend's share group (its plain subscription gets a copy and takes nothing from the group). No gateway status:
    Home Assistant reads that itself for availability."""
    reads = [f"{mqtt.ROOT}/{site}/+/up/readings", f"{mqtt.ROOT}/{site}/+/devices/+", ha.birth_topic(root, site)]
    return [
        *(Acl("subscribeLiteral", topic) for topic in reads),
        *(Acl("publishClientReceive", topic) for topic in reads),
        Acl("publishClientSend", ha.config_filter(root, site)),
        Acl("publishClientSend", ha.site_state_filter(site)),
    ]


def homeassistant_acls(site: str, root: str) -> list[Acl]:
    """Home Assistant of one household: read its site's discovery, state and availability (gateway status and
    DeviceInfo), publish only its birth and will. Patterns, because Home Assistant subscribes with wildcards of
    its own choosing; a pattern never matches a ``$share/`` filter."""
    reads = [f"{ha.discovery_prefix(root, site)}/#", ha.site_state_filter(site), f"{mqtt.ROOT}/{site}/+/status",
             f"{mqtt.ROOT}/{site}/+/devices/+"]
    return [
        *(Acl("subscribePattern", topic) for topic in reads),
        *(Acl("publishClientReceive", topic) for topic in reads),
        Acl("publishClientSend", ha.birth_topic(root, site)),
    ]


def notifier_acls() -> list[Acl]:
    """Subscribe to and receive the retained alert lists; no publishing, no readings, no share group."""
    alerts = f"{mqtt.ROOT}/+/alerts"
    return [Acl("subscribeLiteral", alerts), Acl("publishClientReceive", alerts)]


def admin_acls() -> list[Acl]:
    """The plugin's control topic only: mosquitto_ctrl needs nothing else, and the admin reads no data."""
    return [
        Acl("publishClientSend", DYNSEC_CONTROL),
        Acl("subscribePattern", DYNSEC_CONTROL),
        Acl("publishClientReceive", DYNSEC_CONTROL),
    ]


# --- the file ------------------------------------------------------------------------------------------------


def hash_password(password: str, salt: bytes) -> tuple[str, str]:
    """``(password, salt)`` fields of a client: base64 of PBKDF2-HMAC-SHA512 over the raw salt bytes."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"the plugin needs a {SALT_BYTES}-byte salt, got {len(salt)}")
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return base64.b64encode(digest).decode(), base64.b64encode(salt).decode()


def _client(username: str, textname: str, rolename: str, password: str, salt: bytes, clientid: str = "") -> Client:
    hashed, salt_b64 = hash_password(password, salt)
    return Client(username=username, textname=textname, password=hashed, salt=salt_b64,
                  iterations=PBKDF2_ITERATIONS, roles=[RoleRef(rolename)], clientid=clientid)


def build_config(
    users: UserList,
    backend_username: str,
    share_group: str,
    passwords: Mapping[str, str],
    salt: Callable[[], bytes] = lambda: os.urandom(SALT_BYTES),
    discovery_root: str = ha.DEFAULT_DISCOVERY_ROOT,
) -> DynSecConfig:
    """The whole plugin file: one role and one client per user. ``passwords`` maps every user name to its
    password (KeyError names a missing one); ``salt`` is injectable for reproducible tests; ``discovery_root`` is
    the bridge's ``BACKEND_HOMEASSISTANT_DISCOVERY_ROOT``."""
    check_backend_identity(backend_username, share_group)
    service_usernames(users, backend_username)
    if users.homeassistant_sites and not ha.is_discovery_root(discovery_root):
        raise ConfigError(f"Home Assistant discovery root {discovery_root!r} must be topic levels of "
                          "[A-Za-z0-9_-] (BACKEND_HOMEASSISTANT_DISCOVERY_ROOT)")
    roles = [Role("backend", f"CDS backend, share group {share_group}", backend_acls(share_group))]
    clients = [_client(backend_username, "CDS backend replicas", "backend", passwords[backend_username], salt())]
    if users.ops_username:
        roles.append(Role("ops", "read-only debugging, no share group", ops_acls()))
        clients.append(_client(users.ops_username, "operations (read-only)", "ops",
                               passwords[users.ops_username], salt()))
    if users.notifier_username:
        roles.append(Role("notifier", "alert notifications: reads the alert lists only", notifier_acls()))
        clients.append(_client(users.notifier_username, "alert notifier (read-only)", "notifier",
                               passwords[users.notifier_username], salt()))
    if users.admin_username:
        roles.append(Role("dynsec-admin", "mosquitto_ctrl dynsec only", admin_acls()))
        clients.append(_client(users.admin_username, "dynamic-security administrator", "dynsec-admin",
                               passwords[users.admin_username], salt()))
    for gw in users.gateways:
        roles.append(Role(gw.rolename, f"gateway {gw.username}", gateway_acls(gw.site, gw.gateway)))
        # Bound to its client id: Mosquitto 2.0.11 hands a persistent session to whoever connects with its
        # client id, whatever the user, so an unbound gateway could take over a backend replica's session (and
        # its place in the share group) just by connecting as cds-backend-1.
        clients.append(_client(gw.username, f"gateway {gw.username}", gw.rolename, passwords[gw.username], salt(),
                               gw.resolved_client_id))
    for site in users.homeassistant_sites:  # bound to client ids for the same reason as the gateways
        roles.append(Role(f"homeassistant-bridge/{site}", f"Home Assistant bridge of {site}",
                          homeassistant_bridge_acls(site, discovery_root)))
        clients.append(_client(ha.bridge_username(site), f"Home Assistant bridge of {site}",
                               f"homeassistant-bridge/{site}", passwords[ha.bridge_username(site)], salt(),
                               ha.bridge_client_id(site)))
        roles.append(Role(f"homeassistant/{site}", f"Home Assistant of {site} (read-only)",
                          homeassistant_acls(site, discovery_root)))
        clients.append(_client(ha.ha_username(site), f"Home Assistant of {site}", f"homeassistant/{site}",
                               passwords[ha.ha_username(site)], salt(), ha.ha_client_id(site)))
    return DynSecConfig(clients=clients, roles=roles)


def encode_config(config: DynSecConfig) -> bytes:
    return _json_encoder.encode(config) + b"\n"


# --- a running broker ------------------------------------------------------------------------------------------


def add_gateway_commands(gw: GatewayUser, password_path: str, ctrl: str = "mosquitto_ctrl") -> list[str]:
    """Shell lines that give a running broker the same role and client as :func:`build_config` would.

    ``ctrl`` is the command prefix that reaches the broker as the admin (e.g. ``mosquitto_ctrl -o ctrl.conf``).
    The role is complete before the client exists, so the gateway never connects with partial rights; its
    password is read from its file by the shell, never printed.
    """
    q = shlex.quote
    lines = [f"{ctrl} dynsec createRole {q(gw.rolename)}"]
    lines += [f"{ctrl} dynsec addRoleACL {q(gw.rolename)} {acl.acltype} {q(acl.topic)} allow"
              for acl in gateway_acls(gw.site, gw.gateway)]
    lines.append(f"{ctrl} dynsec createClient {q(gw.username)} -c {q(gw.resolved_client_id)}"
                 f' -p "$(cat {q(password_path)})"')
    lines.append(f"{ctrl} dynsec addClientRole {q(gw.username)} {q(gw.rolename)}")
    return lines
