"""The gateway's one settings object: a TOML file, then ``GATEWAY_*`` environment overrides.

Nothing else in the gateway reads ``os.environ``. Every field below is documented with its default; the example
``deploy/gateway/gateway.toml`` repeats them for operators.

Environment overrides: ``GATEWAY_<FIELD>`` for top-level fields (``GATEWAY_SITE``) and
``GATEWAY_<SECTION>__<FIELD>`` (double underscore) inside a section (``GATEWAY_MQTT__PASSWORD``,
``GATEWAY_QUEUE__MAX_ROWS``). List fields take comma-separated values (``GATEWAY_SERIAL__PORTS=/dev/a,/dev/b``).
Secrets may also come from files (``mqtt.password_file``, ``status.password_file``) so that they never sit in the
TOML file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from gateway.errors import SettingsError
from protocol.ids import ID_PATTERN
from protocol.mqtt import MAX_BATCH

ENV_PREFIX = "GATEWAY_"

Ident = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class SerialSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Meters on serial ports."""

    ports: Annotated[list[str], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["/dev/serial/by-id/*"]
    )
    """Stable paths of the meters' ports; an entry with ``*``/``?``/``[`` is a glob, rescanned every
    ``rescan_s``. Default ``["/dev/serial/by-id/*"]`` (every USB serial device, by its serial number)."""
    baudrate: Annotated[int, msgspec.Meta(gt=0)] = 115200
    """UART speed; the AICSS firmware uses 115200 8N1 (ignored on pseudo-terminals)."""
    rescan_s: Positive = 5.0
    """How often globs in ``ports`` are expanded again to find newly plugged meters. Default 5 s."""
    reopen_min_s: Positive = 0.2
    """First wait before reopening a port that failed; doubles up to ``reopen_max_s``. Default 0.2 s."""
    reopen_max_s: Positive = 5.0
    """Longest wait between reopen attempts. Default 5 s."""
    sync_interval_s: Positive = 1.0
    """At most one SYNC per this interval on a link that sends READINGs without a HELLO. Default 1 s."""
    config_timeout_s: Positive = 10.0
    """A downlink CONFIG with no CONFIG_RESULT after this long is reported as ``timeout``. Default 10 s."""


class QueueSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The durable SQLite queue between the meters and the broker."""

    path: str = "/var/lib/cds-gateway/queue.sqlite3"
    """SQLite file (WAL mode: ``-wal`` and ``-shm`` files live next to it). Default
    ``/var/lib/cds-gateway/queue.sqlite3``."""
    max_rows: Annotated[int, msgspec.Meta(ge=1)] = 5_000_000
    """Most readings kept (about 7 days of 8 meters at one reading per second). Default 5 000 000."""
    max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1_500_000_000
    """Most payload bytes kept (each row counted as its JSON plus 64 bytes of overhead). Default 1.5 GB."""
    max_age_days: Positive = 90.0
    """Readings measured longer ago than this are deleted unsent and counted as ``expired``. Default 90."""
    full_policy: Literal["drop-oldest", "refuse-new"] = "drop-oldest"
    """What happens when a limit is reached. ``drop-oldest`` deletes the oldest queued readings to make room
    (counted as ``dropped_full``); ``refuse-new`` stops accepting (and ACKing) new readings, so the meters keep
    them and, once their own small queues are full, drop their oldest ones (counted as ``dropped_at_meter`` from
    their STATUS). Never silent. Default ``drop-oldest``."""
    synchronous: Literal["full", "normal"] = "full"
    """SQLite ``synchronous`` for the connection that commits readings before ACKing them. ``full`` fsyncs the
    WAL on every commit: an ACKed reading survives power loss. ``normal`` survives kill -9 and OS crashes of the
    process but may lose the last commits on power loss (after the meter was ACKed). Default ``full``."""
    commit_window_ms: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 20
    """Group commit: readings arriving within this window share one commit (one fsync) and are ACKed together
    after it. Default 20 ms."""
    expire_interval_s: Positive = 60.0
    """How often the age limit is enforced. Default 60 s."""
    replay_window_s: Annotated[float, msgspec.Meta(ge=0)] = 180.0
    """Seconds a reading is kept after the broker PUBACKed it, to be published again after every (re)connection:
    Mosquitto restarts from its last autosave after a crash (kill -9, power loss) and loses what it PUBACKed since.
    Must exceed the broker's ``autosave_interval`` (60 s in deploy/mosquitto/mosquitto.conf) plus the time the
    gateway needs to notice the crash and reconnect. These rows are not counted as queued, count against
    ``max_rows``/``max_bytes`` and are the first deleted when a bound is reached (counted as ``replay_trimmed``).
    0 turns replay off. Default 180 s. Only in force while the backend sends no end-to-end receipts (see
    ``receipt_timeout_s``)."""
    receipt_timeout_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    """End-to-end receipts: every uplink batch carries an id, and a reading the broker PUBACKed is kept until the
    backend confirms (on ``.../down/receipts``) that it is in InfluxDB or dead-lettered. A reading still
    unconfirmed this many seconds after it was sent is sent again: at once when a batch sent after it has been
    confirmed meanwhile (it was lost on the way: broker crash, a foreign member of the backend's share group),
    otherwise one batch at a time with a backoff (the backend is down; the broker holds the copies). It should
    exceed the backend's usual delay from PUBACK to stored (a flush, an InfluxDB write). Until the first receipt
    arrives (an older backend sends none) the replay window stays in force; the first receipt switches the queue
    to receipts mode for good. Unconfirmed readings count against ``max_rows``/``max_bytes`` and are the first
    deleted when a bound is reached (counted as ``unconfirmed_trimmed``). 0 turns receipts off (batches carry no
    id, the replay window alone protects PUBACKed readings). Default 60 s."""


class MqttSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The MQTT uplink (MQTT 5, persistent session, QoS 1)."""

    host: str = "127.0.0.1"
    """Broker host name or address. Default ``127.0.0.1``."""
    port: Port = 1883
    """Broker port (usually 8883 with TLS). Default 1883."""
    tls: bool = False
    """Connect with TLS. Default false."""
    ca_file: str = ""
    """CA bundle to verify the broker; empty = the system's CAs. Default empty."""
    cert_file: str = ""
    """Client certificate for mutual TLS; empty = none. Default empty."""
    key_file: str = ""
    """Private key of ``cert_file``. Default empty."""
    tls_insecure: bool = False
    """Skip the broker host name check (testing only). Default false."""
    username: str = ""
    """MQTT user name; empty = anonymous. Default empty."""
    password: str = ""
    """MQTT password; prefer ``password_file`` or ``GATEWAY_MQTT__PASSWORD``. Default empty."""
    password_file: str = ""
    """File whose first line is the MQTT password (overrides ``password``). Default empty."""
    client_id: str = ""
    """MQTT client id; must be stable for the persistent session. Empty = ``cds-gw-<site>-<gateway>``."""
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=65535)] = 30
    """MQTT keepalive. Default 30 s."""
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=MAX_BATCH)] = MAX_BATCH
    """Readings per uplink message, at most ``protocol.mqtt.MAX_BATCH`` (500). Default 500."""
    max_inflight: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 16
    """Uplink messages published and not yet PUBACKed at once. Default 16."""
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0)] = 7 * 24 * 3600
    """MQTT 5 session expiry: the broker keeps our session (and queued downlink CONFIGs) this long while we are
    away. Default 7 days."""
    reconnect_min_s: Positive = 0.5
    """First reconnect delay; doubles up to ``reconnect_max_s``. Default 0.5 s."""
    reconnect_max_s: Positive = 30.0
    """Longest reconnect delay. Default 30 s."""
    status_interval_s: Positive = 30.0
    """How often the retained gateway status (queue depth, oldest reading) is republished. Default 30 s."""


class StatusSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The local, read-only status page (HTML, ``/status.json``, ``/metrics``)."""

    enabled: bool = True
    """Serve the status page. Default true."""
    bind: str = "127.0.0.1"
    """Address to listen on. Default ``127.0.0.1`` (this machine only); ``0.0.0.0`` opens the page to the LAN,
    which should come with a password."""
    port: Port = 8080
    """TCP port; 0 picks a free one (tests). Default 8080."""
    username: str = "cds"
    """User name for HTTP basic authentication when a password is set. Default ``cds``."""
    password: str = ""
    """Password for the page; empty = no password. Prefer ``password_file``. Default empty."""
    password_file: str = ""
    """File whose first line is the page password (overrides ``password``). Default empty."""
    refresh_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 5
    """The HTML page reloads itself this often. Default 5 s."""


class Settings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything ``python -m gateway run`` needs."""

    site: Ident
    """Site id (topic level and InfluxDB tag): lowercase letters, digits, ``-`` and ``_``. Required."""
    gateway: Ident
    """This gateway's id within the site, same alphabet. Required."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log verbosity (journald). Default INFO."""
    serial: SerialSettings = msgspec.field(default_factory=SerialSettings)
    queue: QueueSettings = msgspec.field(default_factory=QueueSettings)
    mqtt: MqttSettings = msgspec.field(default_factory=MqttSettings)
    status: StatusSettings = msgspec.field(default_factory=StatusSettings)

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"cds-gw-{self.site}-{self.gateway}"


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "serial": SerialSettings,
    "queue": QueueSettings,
    "mqtt": MqttSettings,
    "status": StatusSettings,
}
_LIST_FIELDS = {("serial", "ports")}


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    top = set(Settings.__struct_fields__) - set(_SECTIONS)
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if "__" in name:
            section, _, field = name.partition("__")
            cls = _SECTIONS.get(section)
            if cls is None or field not in cls.__struct_fields__:
                raise SettingsError(f"unknown setting {section}.{field}", key)
            parsed: Any = value
            if (section, field) in _LIST_FIELDS:
                parsed = [p.strip() for p in value.split(",") if p.strip()]
            out.setdefault(section, {})[field] = parsed
        elif name in top:
            out[name] = value
        elif name == "config":
            continue  # GATEWAY_CONFIG names the file (read by the CLI), not a setting
        else:
            raise SettingsError(f"unknown setting {name}", key)
    return out


def config_path_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``GATEWAY_CONFIG``: the TOML file to read when ``--config`` is not given (None when unset)."""
    return (os.environ if environ is None else environ).get(ENV_PREFIX + "CONFIG") or None


def _read_secret(path: str, what: str) -> str:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SettingsError(f"cannot read {what} file: {exc.strerror}", path) from exc
    return lines[0].strip() if lines else ""


def load(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (TOML, optional) and apply ``GATEWAY_*`` overrides from ``environ`` (default os.environ).

    Raises :class:`SettingsError` naming the file or variable and the offending field.
    """
    data: dict[str, Any] = {}
    source = str(path) if path else "environment"
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError(f"cannot read configuration: {exc.strerror}", str(path)) from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"invalid TOML: {exc}", str(path)) from exc
    env = _env_overrides(os.environ if environ is None else environ)
    for key, value in env.items():
        if isinstance(value, dict):
            section = data.setdefault(key, {})
            if not isinstance(section, dict):
                raise SettingsError(f"[{key}] must be a table", source)
            section.update(value)
        else:
            data[key] = value
    try:
        settings = msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(str(exc), source) from exc
    if settings.serial.reopen_max_s < settings.serial.reopen_min_s:
        raise SettingsError("serial.reopen_max_s is smaller than serial.reopen_min_s", source)
    if settings.mqtt.reconnect_max_s < settings.mqtt.reconnect_min_s:
        raise SettingsError("mqtt.reconnect_max_s is smaller than mqtt.reconnect_min_s", source)
    if settings.mqtt.password_file:
        settings.mqtt.password = _read_secret(settings.mqtt.password_file, "mqtt.password_file")
    if settings.status.password_file:
        settings.status.password = _read_secret(settings.status.password_file, "status.password_file")
    for name in ("ca_file", "cert_file", "key_file"):
        file = getattr(settings.mqtt, name)
        if file and not Path(file).is_file():
            raise SettingsError(f"mqtt.{name} {file!r} does not exist", source)
    if (settings.mqtt.cert_file != "") != (settings.mqtt.key_file != ""):
        raise SettingsError("mqtt.cert_file and mqtt.key_file go together", source)
    return settings
