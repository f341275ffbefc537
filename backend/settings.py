"""The backend's one settings object, read from ``BACKEND_*`` environment variables.

Every field below maps to the environment variable ``BACKEND_<FIELD NAME IN UPPER CASE>`` (``mqtt_port`` ->
``BACKEND_MQTT_PORT``). Secrets may instead be given as a file path in ``BACKEND_<FIELD>_FILE`` (Docker/K8s
secrets); the file's content, stripped, is used. Nothing else in the backend reads ``os.environ``.

Booleans accept 1/0, true/false, yes/no, on/off. Durations of retention policies use InfluxQL duration
literals (``30d``, ``52w``, ``INF``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import msgspec

from backend.errors import ConfigError

ENV_PREFIX: Final = "BACKEND_"
_SECRET_FIELDS: Final = frozenset({"jwt_secret", "mqtt_password", "influx_password", "influx_token", "users",
                                   "influx_readonly_password", "notify_mqtt_password", "notify_smtp_password"})
_DURATION_RE: Final = r"^(INF|([0-9]+(ns|u|µ|ms|s|m|h|d|w))+)$"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(value: str, field: str) -> tuple[Network, ...]:
    """The comma-separated addresses and networks of setting ``field``; ConfigError naming its variable for an item
    that is neither."""
    found = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigError(f"{ENV_PREFIX}{field.upper()}: {item!r} is not an IP address or network "
                              "such as 192.168.1.0/24") from exc
    return tuple(found)


class User(msgspec.Struct, frozen=True):
    """An API user: ``password_hash`` comes from ``python -m backend hash-password``."""

    username: str
    role: str
    password_hash: str


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """All backend configuration. Defaults suit a local run against ``127.0.0.1``."""

    # --- HTTP server -------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Address uvicorn binds (``python -m backend``)."""
    port: int = 8000
    """TCP port of the REST API."""
    log_level: str = "INFO"
    """Root log level; logs are JSON lines on stderr."""
    debug: bool = False
    """Litestar debug mode (tracebacks in responses). Never in production."""
    http_limit_concurrency: int = 1000
    """Connections and requests served at once by this process; beyond it uvicorn answers 503. Default 1000."""
    http_header_timeout_s: float = 10.0
    """A connection whose request headers are not complete this long after it opened (or after its previous
    response) is closed. Default 10 s."""
    http_max_connections_per_address: int = 64
    """Open connections one client address may hold; more are closed at once. Default 64."""
    http_keepalive_s: int = 5
    """An idle keep-alive connection is closed after this long. Default 5 s."""
    http_trusted_proxies: str = ""
    """Comma-separated addresses or networks (``10.0.0.5``, ``10.0.0.0/24``) of the reverse proxies in front
    (deploy/nginx/cds.conf): only from them are ``X-Forwarded-For`` (the client address of the login throttle and
    the audit log) and ``X-Forwarded-Proto`` believed, and their connections are not counted against
    ``http_max_connections_per_address`` (the proxy caps each real client). Default empty: no proxy is trusted and
    those headers are ignored."""

    # --- MQTT ----------------------------------------------------------------------------------------------
    mqtt_host: str = "127.0.0.1"
    """Broker host."""
    mqtt_port: int = 1883
    """Broker port (8883 for the TLS listener of deploy/mosquitto)."""
    mqtt_username: str = ""
    """Broker user (the backend user of the broker's dynamic-security file, ``python -m backend broker-users``);
    empty = anonymous."""
    mqtt_password: str = ""
    """Broker password (secret; or ``BACKEND_MQTT_PASSWORD_FILE``)."""
    mqtt_tls: bool = False
    """Connect with TLS."""
    mqtt_ca_file: str = ""
    """CA bundle to verify the broker's certificate (empty = system store)."""
    mqtt_client_id: str = ""
    """Stable client id of this replica; the persistent session (and messages in flight to it) is keyed by it,
    so a restarted replica MUST reuse its id. Empty = ``cds-backend-<hostname>``."""
    mqtt_share_group: str = "cds-backend"
    """Shared-subscription group: replicas with the same group split the uplink readings."""
    mqtt_session_expiry_s: int = 30 * 86400
    """MQTT 5 session expiry: how long the broker keeps this replica's session and queue while it is away."""
    mqtt_receive_maximum: int = 1000
    """MQTT 5 receive maximum: unacknowledged messages the broker may have in flight to us (the broker may
    cap it lower, Mosquitto's max_inflight_messages). Bounds memory while InfluxDB is slow or down."""
    mqtt_keepalive_s: int = 30
    """MQTT keepalive."""
    mqtt_adopt_after_s: float = 10.0
    """A peer replica (same share group) offline this long has its session adopted by a survivor, which then
    ingests the peer's queue and share until it returns (backend/adoption.py). 0 disables adoption."""

    # --- ingest --------------------------------------------------------------------------------------------
    ingest_enabled: bool = True
    """Run the MQTT ingest (disable for an API-only replica)."""
    ingest_batch_points: int = 5000
    """Write to InfluxDB when this many points are pending..."""
    ingest_flush_ms: int = 50
    """...or when the oldest pending message waited this long."""
    ingest_writes_in_flight: int = 2
    """Concurrent /write requests."""
    ingest_max_payload_bytes: int = 262144
    """Larger uplink payloads are dead-lettered as ``oversize``."""
    ingest_max_future_s: int = 86400
    """Readings timestamped more than this far ahead of the backend's clock are dead-lettered."""
    ingest_retry_max_s: float = 5.0
    """Cap of the exponential backoff between retries of a failed /write (retried until it succeeds)."""
    ingest_gateway_messages_per_s: float = 50.0
    """Sustained uplink messages per second one gateway may send (0 = no limit); beyond it (after a burst of
    ``ingest_gateway_burst``) batches with a receipt id are dropped without a receipt, so the gateway sends them
    again later (batches of gateways without receipts are kept and counted). Also the rate of
    ``POST /api/v1/aicss/dados`` per API user (429 beyond it)."""
    ingest_gateway_burst: int = 500
    """Messages a gateway may send at once above its sustained rate (a replay after an outage)."""

    # --- provisioning (ingest/provisioning.py) -------------------------------------------------------------
    provisioning_auto: bool = True
    """A meter nobody provisioned is claimed by the first gateway that reports it (within the limits below);
    off: only meters provisioned through the admin API or listed in the sites file are accepted."""
    provisioning_max_devices_per_gateway: int = 64
    """Meters one gateway may own (an admin may set another limit per gateway)."""
    provisioning_new_devices_per_hour: int = 16
    """Meters one gateway may claim automatically per hour (a burst of as many, refilled over the hour)."""

    # --- InfluxDB (v1 HTTP API) ----------------------------------------------------------------------------
    influx_url: str = "http://127.0.0.1:8086"
    """Base URL of the InfluxDB v1 API (1.x, 2.x compat endpoints or 3.x)."""
    influx_username: str = ""
    """InfluxDB 1.x user (``u``/``p`` parameters); empty = no auth."""
    influx_password: str = ""
    """InfluxDB 1.x password (secret)."""
    influx_token: str = ""
    """InfluxDB 2.x/3.x token sent as ``Authorization: Token ...`` (secret); overrides user/password."""
    influx_db: str = "cds"
    """Database holding readings, rollups and the backend's bookkeeping."""
    influx_timeout_s: float = 10.0
    """HTTP timeout of one InfluxDB request."""
    influx_manage_schema: bool = True
    """Create the database and retention policies at startup (off when an admin manages them)."""
    influx_backup_address: str = "127.0.0.1:8088"
    """``host:port`` of influxd's RPC service (its top-level ``bind-address``), which ``influxd backup`` and
    ``influxd restore`` speak; only ``python -m backend backup`` and ``restore`` use it (docs/operations.md,
    "Backup and restore"). The RPC service has no authentication: keep it on loopback."""
    retention_raw: str = "30d"
    """Retention of raw readings (RP ``raw``, the default RP)."""
    retention_1m: str = "400d"
    """Retention of the 1-minute rollup (RP ``r1m``)."""
    retention_1h: str = "INF"
    """Retention of the 1-hour rollup (RP ``r1h``)."""

    # --- rollups -------------------------------------------------------------------------------------------
    rollup_enabled: bool = True
    """Run the rollup worker on this replica (idempotent: several may run it; at least one must). Every replica
    writes dirty marks either way."""
    rollup_interval_s: float = 5.0
    """Pause between rollup passes."""
    rollup_settle_s: float = 2.0
    """Dirty marks younger than this are left for the next pass (writes still becoming visible)."""
    rollup_chunk_s: float = 3600.0
    """Longest stretch of time one rollup step covers (whole minutes; the devices of its window, all of them for the
    energy backfill). A longer catch-up (a day of history loaded at once, a gateway back after a day offline) is
    rolled up chunk by chunk, what is left recorded after each, so every query stays well inside
    ``influx_timeout_s``; a chunk that times out halves the size (down to a minute) until a pass leaves nothing
    behind. Lower it if InfluxDB is slow for this many meters (100 meters at one reading a second: ~360 000 raw
    points an hour)."""

    # --- API and auth --------------------------------------------------------------------------------------
    jwt_secret: str = ""
    """HMAC key of the JWTs (secret; all replicas need the same). Empty = random per process (dev only)."""
    jwt_ttl_s: int = 3600
    """Lifetime of issued tokens."""
    jwt_issuer: str = "cds"
    """``iss`` claim of issued tokens (checked on the way in)."""
    users: tuple[User, ...] = ()
    """API users as JSON: ``[{"username": "ana", "role": "admin", "password_hash": "scrypt$..."}]`` (secret;
    or ``BACKEND_USERS_FILE``)."""
    accounts_db: str = ""
    """InfluxDB database of the accounts store (users, site grants, audit log); empty = ``<influx_db>_accounts``.
    A database of its own so that the admin's InfluxQL console, whose user reads ``influx_db`` only, can never read
    password hashes or the audit log."""
    accounts_refresh_s: float = 5.0
    """Each replica reloads users and grants from InfluxDB at most this long after its last load (and right after
    its own changes): a disabled user or a revoked grant stops working on every replica within this time."""
    config_timeout_s: float = 10.0
    """How long ``PUT /api/v1/aicss/config`` waits for the meter's answer before reporting ``pending``."""
    device_online_s: int = 120
    """A device is online when its gateway is online and it reported within this many seconds."""
    readings_max_points: int = 20000
    """Most points one readings request may return (pt-BR error beyond)."""

    # --- analytics: ANEEL tariffs, consumption, cost, alerts -----------------------------------------------
    sites_file: str = ""
    """TOML file with the sites' pricing configuration (distributor, subgroup, modality, taxes, billing day,
    devices, groups); see docs/analytics.md. Empty = no site can be priced."""
    aneel_base_url: str = "https://dadosabertos.aneel.gov.br"
    """ANEEL's CKAN portal (the fake of ``python -m devstack.aneel_fake`` for an offline demo)."""
    aneel_sync_enabled: bool = True
    """Pull tariffs and bandeiras on a schedule inside the backend (idempotent across replicas)."""
    aneel_sync_interval_s: float = 86400.0
    """Time between successful pulls (a failed pull is retried after ``aneel_retry_s``)."""
    aneel_retry_s: float = 900.0
    """Wait after a failed pull (ANEEL down) before trying again; the last good data keeps being served."""
    aneel_timeout_s: float = 20.0
    """HTTP timeout of one ANEEL request."""
    aneel_attempts: int = 5
    """Attempts per ANEEL request (timeouts, 5xx, HTML pages), with exponential backoff."""
    aneel_backoff_max_s: float = 15.0
    """Cap of the backoff between attempts."""
    analytics_max_power_w: float = 50000.0
    """A register step implying more power than this is treated as a spike (or a reset, if confirmed)."""
    alerts_enabled: bool = True
    """Evaluate alerts periodically and publish them (retained) on ``cds/v1/{site}/alerts``."""
    alerts_interval_s: float = 60.0
    """Time between alert evaluations."""
    alerts_offline_s: int = 600
    """A meter silent for longer than this is reported offline."""
    alerts_pf_min: float = 0.92
    """Power factor below this (with a real load) raises an alert (ANEEL's reference value)."""
    alerts_gateway_queue_age_s: int = 900
    """A gateway online whose oldest unsent reading is older than this, with a queue that did not shrink since its
    previous status, raises ``fila_gateway`` (aviso). 15 min, as Prometheus' CDSGatewayOldestUnsentReading; a
    backlog draining after a reconnect is not reported."""
    alerts_gateway_queue_critical_s: int = 86400
    """An unsent reading older than this makes ``fila_gateway`` crítico, draining or not: the gateway deletes
    readings older than its ``queue.max_age_days`` unsent."""
    alerts_gateway_queue_rows: int = 1000
    """A gateway holding more unsent readings than this at every status for ``alerts_gateway_queue_window_s``, and
    more at the end than at the start, raises ``fila_gateway`` (aviso) as growing (as CDSGatewayQueueGrowing)."""
    alerts_gateway_queue_window_s: int = 900
    """How long a queue must stay above ``alerts_gateway_queue_rows`` and grow to be reported (gateways publish
    their status every 30 s by default)."""
    alerts_aneel_stale_s: int = 2 * 86400
    """No successful ANEEL pull (tariffs, bandeiras) for longer than this raises ``dados_desatualizados`` on every
    site (the pull runs daily; as the health check's warning and CDSAneelDataStale). Judged only where the ANEEL
    pull is enabled."""
    alerts_ons_stale_s: int = 2 * 86400
    """No successful ONS pull (the grid data) for longer than this raises ``dados_desatualizados`` on every site
    (the pull runs twice a day; as CDSOnsDataStale). Judged only where the ONS pull is enabled."""

    # --- notifications: python -m backend notify (backend/notify/, docs/operations.md "Notifications") -------
    notify_state_dir: str = "var/notify"
    """Folder of the notifier's outbox (SQLite, 0600) and lock file; created 0700. One notifier per folder."""
    notify_mqtt_username: str = ""
    """The notifier's own broker user (``notifier_username`` of the broker's user list: read-only, alert lists
    only); empty = anonymous (a local run)."""
    notify_mqtt_password: str = ""
    """Its password (secret; or ``BACKEND_NOTIFY_MQTT_PASSWORD_FILE``)."""
    notify_mqtt_client_id: str = ""
    """The notifier's MQTT client id; empty = ``cds-notify-<hostname>``."""
    notify_smtp_host: str = ""
    """SMTP server of e-mail notifications; empty = e-mail channels fail with "não configurado"."""
    notify_smtp_port: int = 587
    """SMTP port (587 with STARTTLS, 465 with ``ssl``, 25 without TLS)."""
    notify_smtp_security: str = "starttls"
    """``starttls``, ``ssl`` (SMTPS) or ``none`` (a relay on the same host only)."""
    notify_smtp_username: str = ""
    """SMTP login user; empty = no login."""
    notify_smtp_password: str = ""
    """SMTP password (secret; or ``BACKEND_NOTIFY_SMTP_PASSWORD_FILE``)."""
    notify_smtp_from: str = "CDS <cds@localhost>"
    """``From`` of notification e-mails."""
    notify_ntfy_server: str = "https://ntfy.sh"
    """ntfy server of ntfy channels that name none. The operator chose it, so it is trusted: it may be an internal
    address, and ``notify_allowed_networks`` does not apply to it."""
    notify_allowed_networks: str = ""
    """Comma-separated networks (``192.168.1.0/24``, ``10.0.0.7``) that users' webhook URLs and their ntfy channels'
    own servers may lead into besides the public internet: a Home Assistant on the LAN (``192.168.1.0/24``), a local
    test receiver (``127.0.0.0/8``). Default empty: public addresses only. Users choose those URLs, and the notifier
    sends from inside the operator's network, so every address a destination resolves to is checked at each send —
    loopback, private, link-local (cloud metadata), shared (100.64/10), multicast and reserved ones are refused unless
    listed here (backend/notify/egress.py). List as little as possible: every service in a listed network can then
    be sent requests by any user."""
    notify_budget_interval_s: float = 3600.0
    """Time between checks of the projected bill against users' budgets."""
    notify_prefs_refresh_s: float = 30.0
    """The notifier re-reads users' preferences (and test requests) at least this often."""
    notify_timeout_s: float = 15.0
    """Longest one send (SMTP session, webhook or ntfy request) may take before it counts as failed."""
    notify_concurrency: int = 8
    """Sends in progress at once: a slow receiver holds one slot, never the others."""
    notify_retry_base_s: float = 30.0
    """Wait after a first failed attempt; doubled after each further failure (with jitter)..."""
    notify_retry_max_s: float = 3600.0
    """...up to this."""
    notify_max_attempts: int = 12
    """Attempts before a delivery is given up (``falhou``, visible in ``/api/v1/notificacoes/entregas``)."""
    notify_metrics_port: int = 0
    """Port of the notifier's Prometheus ``/metrics`` on ``host``; 0 = not served."""

    # --- ONS: the national grid's open data (backend/ons/, docs/ons.md) --------------------------------------
    ons_base_url: str = "https://dados.ons.org.br"
    """ONS's CKAN portal, where each dataset's yearly files are discovered (``python -m devstack.ons_fake`` serves
    a fake one for an offline demo)."""
    ons_file_hosts: str = "ons-aws-prod-opendata.s3.amazonaws.com,ons-aws-prod-opendata.s3.us-west-2.amazonaws.com"
    """Comma-separated hosts data files may be downloaded from, besides the portal's own: a file URL elsewhere in
    a portal answer is refused."""
    ons_sync_enabled: bool = True
    """Pull the grid data on a schedule inside the backend (idempotent across replicas)."""
    ons_sync_times: str = "12:40,19:40"
    """Brasília times of the scheduled pulls, comma-separated: after ONS's 12 h and 19 h publications."""
    ons_first_year: int = 0
    """Oldest year pulled (ONS has files from 2000); 0 = last year, so the current and the previous year."""
    ons_format: str = "parquet"
    """File read when ONS offers a year in both formats: ``parquet`` (smaller) or ``csv``."""
    ons_retry_s: float = 600.0
    """Wait after a failed pull, doubled after each further failure up to the next scheduled pull; the stored
    data keeps being served (with its age) meanwhile."""
    ons_timeout_s: float = 60.0
    """HTTP timeout of one ONS request (the portal or a file)."""
    ons_attempts: int = 5
    """Attempts per ONS request (timeouts, dropped connections, 5xx), with exponential backoff."""
    ons_backoff_max_s: float = 30.0
    """Cap of the backoff between attempts."""
    ons_stale_s: float = 4 * 86400.0
    """Grid data whose newest hour is older than this is flagged stale (ONS publishes with a lag of 1-2 days)."""

    # --- knowledge base and the admin's InfluxQL console (backend/knowledge/, backend/store/readonly.py) ---------
    knowledge_docs_dir: str = ""
    """Folder of Markdown docs that ``GET /api/v1/conhecimento`` indexes beside the pt-BR articles, one passage per
    section; empty = the repo's ``docs/`` when it exists (a source checkout), none otherwise. The index lives in
    memory and is rebuilt when a file changes (docs/conhecimento.md)."""
    knowledge_refresh_s: float = 5.0
    """At most this often a search checks whether an article or doc changed (file names, sizes, times)."""
    influx_readonly_username: str = ""
    """InfluxDB user of ``POST /api/v1/consultas/influxql``, with READ on ``influx_db`` and nothing else: created,
    or reset to exactly that, at start-up when the schema is managed (the backend's InfluxDB user must then be an
    admin). Empty = the console is off (503). InfluxDB must run with authentication on."""
    influx_readonly_password: str = ""
    """Its password (secret; or ``BACKEND_INFLUX_READONLY_PASSWORD_FILE``)."""
    influxql_max_rows: int = 10000
    """Most rows the console returns for one statement (the answer then says ``truncada``)."""
    influxql_max_raw_range_s: int = 7 * 86400
    """Longest time range a console SELECT may read from raw readings (rollups, ANEEL and ONS data: no cap)."""
    influxql_timeout_s: float = 10.0
    """A console statement running longer is stopped (InfluxDB aborts it when the connection closes)."""

    # --- data out for analysts (backend/analytics/export.py) ------------------------------------------------------
    export_chunk_rows: int = 20000
    """Most rows ``GET /api/v1/exportacao`` reads from InfluxDB at once (one time window, one Parquet row group):
    bounds the memory of an export whatever its period."""

    # --- Home Assistant bridge (backend/homeassistant/, docs/homeassistant.md) -----------------------------------
    # ``python -m backend homeassistant --site SITE``: one process per site, on the broker of mqtt_host, mqtt_port,
    # mqtt_tls and mqtt_ca_file above, but as a user of its own (never the backend's).
    homeassistant_username: str = ""
    """The bridge's broker user; empty = ``homeassistant-bridge@<site>``, the user ``python -m backend
    broker-users`` creates for each site listed in ``homeassistant_sites`` of the gateway list."""
    homeassistant_password_file: str = ""
    """File holding that user's password (``<passwords_dir>/homeassistant-bridge@<site>`` of the gateway list);
    required."""
    homeassistant_discovery_root: str = "homeassistant"
    """Discovery topics go under ``<root>/<site>/``, which must be Home Assistant's discovery prefix. Also read by
    ``broker-users``, whose access rules name the same topics, so set it alike for both. Default ``homeassistant``
    (Home Assistant's own default root)."""
    homeassistant_state_interval_s: float = 10.0
    """Each meter's state goes to Home Assistant at most this often (the latest reading then); discovery is
    published at once. Default 10 s."""
    homeassistant_metrics_port: int = 0
    """Port of the bridge's Prometheus ``/metrics`` on ``host`` (readings taken, configs and states published,
    input dropped by reason, connected); 0 = not served."""

    def resolved_client_id(self) -> str:
        """The MQTT client id of this replica (see ``mqtt_client_id``)."""
        return self.mqtt_client_id or f"cds-backend-{socket.gethostname()}"

    def resolved_accounts_db(self) -> str:
        """The accounts store's database (see ``accounts_db``)."""
        return self.accounts_db or f"{self.influx_db}_accounts"

    def notify_networks(self) -> tuple[Network, ...]:
        """The networks of ``notify_allowed_networks``; ConfigError for an item that is not an address or a network
        (skipping it would silently refuse the receivers the operator meant to allow)."""
        return networks(self.notify_allowed_networks, "notify_allowed_networks")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``environ`` (default ``os.environ``); ConfigError names the bad variable."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for name in cls.__struct_fields__:
            key = ENV_PREFIX + name.upper()
            if key in env:
                raw[name] = env[key]
            elif name in _SECRET_FIELDS and key + "_FILE" in env:
                try:
                    raw[name] = Path(env[key + "_FILE"]).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ConfigError(f"{key}_FILE: cannot read {env[key + '_FILE']!r}: {exc}") from exc
        if "users" in raw:
            try:
                raw["users"] = msgspec.json.decode(raw["users"])
            except msgspec.DecodeError as exc:
                raise ConfigError(f"{ENV_PREFIX}USERS is not valid JSON: {exc}") from exc
        try:
            settings = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid backend setting: {exc} (variables {ENV_PREFIX}<FIELD>)") from exc
        settings.validate()
        return settings

    def validate(self) -> None:
        """Cross-field checks; raises ConfigError."""
        for name in ("retention_raw", "retention_1m", "retention_1h"):
            if not re.fullmatch(_DURATION_RE, getattr(self, name)):
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}: {getattr(self, name)!r} is not an InfluxQL "
                                  "duration such as 30d, 52w or INF")
        if not re.fullmatch(r"^[A-Za-z0-9_-]{1,64}$", self.influx_db):
            raise ConfigError(f"{ENV_PREFIX}INFLUX_DB: {self.influx_db!r} must match [A-Za-z0-9_-]{{1,64}}")
        if not re.fullmatch(r"^[A-Za-z0-9_.-]{1,64}$", self.mqtt_share_group):
            raise ConfigError(f"{ENV_PREFIX}MQTT_SHARE_GROUP must match [A-Za-z0-9_.-]{{1,64}}")
        if not re.fullmatch(r"^[A-Za-z0-9_.-]{1,128}$", self.resolved_client_id()):
            raise ConfigError(f"{ENV_PREFIX}MQTT_CLIENT_ID must match [A-Za-z0-9_.-]{{1,128}} (it is a topic level)")
        if not 1 <= self.mqtt_receive_maximum <= 65535:
            raise ConfigError(f"{ENV_PREFIX}MQTT_RECEIVE_MAXIMUM must be within 1..65535")
        ro_user, ro_password = self.influx_readonly_username, self.influx_readonly_password
        if bool(ro_user) != bool(ro_password):
            raise ConfigError(f"{ENV_PREFIX}INFLUX_READONLY_USERNAME and _PASSWORD must be set together")
        if ro_user and (not re.fullmatch(r"^[A-Za-z0-9_.-]{1,64}$", ro_user) or ro_user == self.influx_username):
            raise ConfigError(f"{ENV_PREFIX}INFLUX_READONLY_USERNAME must match [A-Za-z0-9_.-]{{1,64}} and differ "
                              f"from {ENV_PREFIX}INFLUX_USERNAME")
        if "\n" in ro_password or "\x00" in ro_password:
            raise ConfigError(f"{ENV_PREFIX}INFLUX_READONLY_PASSWORD must not contain a newline or NUL")
        if self.influxql_max_rows < 1 or self.influxql_max_raw_range_s < 1 or self.influxql_timeout_s <= 0:
            raise ConfigError(f"{ENV_PREFIX}INFLUXQL_MAX_ROWS, _MAX_RAW_RANGE_S and _TIMEOUT_S must be positive")
        if self.accounts_db and not re.fullmatch(r"^[A-Za-z0-9_-]{1,64}$", self.accounts_db):
            raise ConfigError(f"{ENV_PREFIX}ACCOUNTS_DB: {self.accounts_db!r} must match [A-Za-z0-9_-]{{1,64}}")
        if self.rollup_chunk_s < 60:
            raise ConfigError(f"{ENV_PREFIX}ROLLUP_CHUNK_S must be at least 60 (the 1-minute rollup's bucket)")
        if self.export_chunk_rows < 1:
            raise ConfigError(f"{ENV_PREFIX}EXPORT_CHUNK_ROWS must be >= 1")
        if self.accounts_refresh_s <= 0:
            raise ConfigError(f"{ENV_PREFIX}ACCOUNTS_REFRESH_S must be positive")
        if self.ingest_gateway_messages_per_s < 0 or self.ingest_gateway_burst < 1:
            raise ConfigError(f"{ENV_PREFIX}INGEST_GATEWAY_MESSAGES_PER_S must be >= 0 and _BURST >= 1")
        if self.provisioning_max_devices_per_gateway < 1 or self.provisioning_new_devices_per_hour < 1:
            raise ConfigError(f"{ENV_PREFIX}PROVISIONING_MAX_DEVICES_PER_GATEWAY must be >= 1 and "
                              "_NEW_DEVICES_PER_HOUR >= 1 (turn PROVISIONING_AUTO off to claim none)")
        self.notify_networks()  # ConfigError for an item that is not a network
        for user in self.users:
            if user.role not in ("viewer", "operator", "admin"):
                raise ConfigError(f"user {user.username!r}: role {user.role!r} is not viewer/operator/admin")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings from the environment (cached; tests pass a Settings to create_app)."""
    return Settings.from_env()
