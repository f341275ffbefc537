"""The shipped reverse proxy (deploy/nginx/cds.conf), rendered as docs/operations.md says, checked by ``nginx -t``
and run as a real nginx in front of a real ``python -m backend`` that trusts it (``BACKEND_HTTP_TRUSTED_PROXIES``).

Clients bind other loopback addresses (127.0.0.2, .3, ...) so that nginx and the backend see distinct clients on
one machine; nginx itself reaches the backend from 127.0.0.1, the only address the backend trusts.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from backend.accounts.passwords import hash_password
from backend.api.server import server_options
from backend.errors import ConfigError
from backend.settings import Settings, User
from devstack.influxdb import InfluxService
from devstack.processes import HOST, ServiceStartError, find_binary, free_port
from tests.backend.conftest import JWT_SECRET, REPO, BackendProcess

SHIPPED = REPO / "deploy" / "nginx" / "cds.conf"
PLACEHOLDER = re.compile(r"\$\{(CDS_[A-Z_]+)\}")
ADMIN_PASSWORD = "senha-do-admin-" + "x" * 8
CAP = 4
"""The backend's per-address connection cap in this module."""
ADDRESS_FREE_FAILURES = 30
"""Failed logins one address gets before the backend locks it (LoginThrottle's default, backend/api/throttle.py)."""
LOGIN_BURST = 40
"""``burst`` of the login location in cds.conf."""


def render(template: str, values: dict[str, str]) -> str:
    """What ``envsubst '${CDS_A} ${CDS_B} ...'`` does given the names the file documents: replace exactly those
    placeholders and leave nginx's own ``$variables`` alone."""
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass
class Proxy:
    """nginx on 127.0.0.1 (an HTTPS and an HTTP port) in front of one backend replica."""

    https_port: int
    http_port: int
    backend: BackendProcess
    cert: Path
    nginx_t: subprocess.CompletedProcess[str]

    def tls(self, newest: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED) -> ssl.SSLContext:
        """A client context that trusts the test's certificate and offers TLS versions up to ``newest``."""
        context = ssl.create_default_context(cafile=str(self.cert))
        context.maximum_version = newest
        return context

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.https_port}"

    def client(self, source: str) -> httpx.Client:
        """An HTTPS client of the proxy connecting from ``source`` (a loopback address): one real client."""
        return httpx.Client(base_url=self.url, transport=httpx.HTTPTransport(local_address=source, verify=self.tls()),
                            timeout=30)

    def direct(self, source: str) -> httpx.Client:
        """A client of the backend itself, bypassing the proxy, from ``source``."""
        return httpx.Client(base_url=f"http://{HOST}:{self.backend.port}",
                            transport=httpx.HTTPTransport(local_address=source), timeout=30)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=cds.test",
                    "-addext", f"subjectAltName=DNS:cds.test,IP:{HOST}"], check=True, capture_output=True)
    return cert, key


def _nginx_main_config(folder: Path, site_config: Path) -> Path:
    """A minimal nginx.conf of our own (pid, logs and temporary files in ``folder``) that includes the rendered
    file inside http {}, where Debian's /etc/nginx/nginx.conf includes conf.d/*.conf."""
    lines = ["user root;"] if os.geteuid() == 0 else []  # else workers run as nobody, locked out of tmp_path
    lines += [
        "worker_processes 1;",
        f"pid {folder / 'nginx.pid'};",
        f"error_log {folder / 'error.log'} info;",
        "events { worker_connections 512; }",
        "http {",
        f"  access_log {folder / 'access.log'};",
        *(f"  {kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        f"  include {site_config};",
        "}",
    ]
    path = folder / "nginx.conf"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def _render_site(folder: Path, cert: Path, key: Path, backend_port: int) -> tuple[Path, int, int]:
    """The shipped file rendered for this test: HTTPS and HTTP on free ports of 127.0.0.1, one replica."""
    https_port, http_port = free_port(), free_port()
    site = folder / "cds.conf"
    site.write_text(render(SHIPPED.read_text(encoding="utf-8"), {
        "CDS_SERVER_NAME": "cds.test", "CDS_HTTP_LISTEN": f"{HOST}:{http_port}",
        "CDS_HTTPS_LISTEN": f"{HOST}:{https_port}", "CDS_TLS_CERTIFICATE": str(cert),
        "CDS_TLS_CERTIFICATE_KEY": str(key), "CDS_BACKEND_SERVERS": f"server {HOST}:{backend_port};",
    }), encoding="utf-8")
    return site, https_port, http_port


def _start_nginx(argv: list[str], log_path: Path, https_port: int, cert: Path) -> subprocess.Popen[bytes]:
    """nginx in the foreground, returned once it answers /health over HTTPS (ServiceStartError with its log if it
    exits or stays silent)."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*argv, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=log,
                                start_new_session=True)
    tls = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"https://{HOST}:{https_port}/health", verify=tls, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    _stop_nginx(proc)
    raise ServiceStartError(f"nginx did not serve /health: {log_path.read_text(errors='replace')[-2000:]}")


def _stop_nginx(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGQUIT)  # graceful stop of the master and its workers
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def proxy(influxdb: InfluxService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """One API-only backend replica (no MQTT ingest: the proxy is about HTTP) behind one nginx."""
    nginx = find_binary("nginx", "/usr/sbin/nginx")
    folder = tmp_path_factory.mktemp("nginx")
    settings = Settings(
        influx_url=influxdb.url, influx_db=f"rp{secrets.token_hex(4)}", jwt_secret=JWT_SECRET, log_level="WARNING",
        ingest_enabled=False, rollup_enabled=False, aneel_sync_enabled=False, ons_sync_enabled=False,
        alerts_enabled=False, users=(User("admin", "admin", hash_password(ADMIN_PASSWORD)),),
        http_trusted_proxies=HOST, http_max_connections_per_address=CAP,
        http_header_timeout_s=60.0,  # idle sockets of the cap test must outlive the test
    )
    backend = BackendProcess(settings, folder, "backend")
    proc: subprocess.Popen[bytes] | None = None
    try:
        backend.start(timeout=120)  # usually 2-3 s; far more while other suites load the machine
        cert, key = _self_signed(folder)
        for attempt in range(3):  # a free port may be taken by someone else before nginx binds it
            site, https_port, http_port = _render_site(folder, cert, key, backend.port)
            argv = [nginx, "-p", str(folder), "-c", str(_nginx_main_config(folder, site))]
            checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
            if checked.returncode != 0:
                break  # the first test reports nginx's complaint; the others fail without a proxy
            try:
                proc = _start_nginx(argv, folder / "nginx.stderr", https_port, cert)
                break
            except ServiceStartError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
        yield Proxy(https_port, http_port, backend, cert, checked)
    finally:
        if proc is not None:
            _stop_nginx(proc)
        backend.stop()


def test_shipped_config_renders_from_its_documented_variables_and_passes_nginx_t(proxy: Proxy) -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    envsubst_line = text[text.index("envsubst '"):text.index("< cds.conf")]
    assert set(PLACEHOLDER.findall(text)) == set(PLACEHOLDER.findall(envsubst_line)) == {
        "CDS_SERVER_NAME", "CDS_HTTP_LISTEN", "CDS_HTTPS_LISTEN", "CDS_TLS_CERTIFICATE", "CDS_TLS_CERTIFICATE_KEY",
        "CDS_BACKEND_SERVERS"}
    assert proxy.nginx_t.returncode == 0, proxy.nginx_t.stderr
    assert "test is successful" in proxy.nginx_t.stderr and "[warn]" not in proxy.nginx_t.stderr


def test_https_serves_health_with_hsts_over_tls_1_2_or_later_only(proxy: Proxy) -> None:
    with proxy.client("127.0.0.2") as client:
        r = client.get("/health")
    assert r.status_code == 200, r.text
    assert r.headers["strict-transport-security"] == "max-age=63072000"

    def handshake(context: ssl.SSLContext) -> str:
        with socket.create_connection((HOST, proxy.https_port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=HOST) as tls:
            return str(tls.version())

    assert handshake(proxy.tls()) == "TLSv1.3"
    assert handshake(proxy.tls(ssl.TLSVersion.TLSv1_2)) == "TLSv1.2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # offering TLS 1.1 is the point
        legacy = proxy.tls(ssl.TLSVersion.TLSv1_1)
        legacy.minimum_version = ssl.TLSVersion.TLSv1
    legacy.set_ciphers("DEFAULT@SECLEVEL=0")  # let our own OpenSSL offer it, so the refusal is the server's
    with pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"):
        handshake(legacy)


def test_plain_http_redirects_to_https(proxy: Proxy) -> None:
    r = httpx.get(f"http://{HOST}:{proxy.http_port}/api/v1/devices?site=casa-1", timeout=10)
    assert r.status_code == 301
    assert r.headers["location"] == f"https://{HOST}/api/v1/devices?site=casa-1"


def test_body_over_the_backend_cap_refused_413_by_the_proxy(proxy: Proxy) -> None:
    cap = Settings().ingest_max_payload_bytes
    with proxy.client("127.0.0.2") as client:
        under = client.post("/api/v1/aicss/dados", content=b" " * (cap - 1024))
        over = client.post("/api/v1/aicss/dados", content=b" " * (cap + 1))
    assert under.status_code == 401, under.text  # reached the backend, which wants a token
    assert over.status_code == 413
    assert over.json()["detail"].startswith("Corpo da requisição grande demais")
    assert over.headers["strict-transport-security"]


def _login(client: httpx.Client, username: str, password: str, **headers: str) -> httpx.Response:
    return client.post("/api/v1/auth/token", json={"username": username, "password": password}, headers=headers)


def _until_locked(attempt: Callable[[int], httpx.Response], most: int) -> list[httpx.Response]:
    """The answers to failed logins made by ``attempt(i)`` until the first 429 (or ``most`` attempts)."""
    answers: list[httpx.Response] = []
    while len(answers) < most and (not answers or answers[-1].status_code != 429):
        answers.append(attempt(len(answers)))
    return answers


def test_login_throttle_counts_each_real_client_behind_the_proxy(proxy: Proxy) -> None:
    """Two clients fail 20 logins each through the one proxy: 40 failures from the proxy's address would have
    locked it after 30, but each real address has its own budget. User names differ, so only addresses count."""
    a, b = "127.0.0.3", "127.0.0.4"
    with proxy.client(a) as client_a, proxy.client(b) as client_b:
        for i in range(20):
            assert _login(client_a, f"a-{i}", "errada").status_code == 401
            # a client's own X-Forwarded-For changes nothing: nginx replaces it with the address it sees
            assert _login(client_b, f"b-{i}", "errada", **{"X-Forwarded-For": a}).status_code == 401
        answers = _until_locked(lambda i: _login(client_a, f"a-{20 + i}", "errada"), ADDRESS_FREE_FAILURES)
        assert _login(client_b, "b-x", "errada").status_code == 401
    statuses = [r.status_code for r in answers]
    assert statuses[-1] == 429 and statuses.count(401) >= ADDRESS_FREE_FAILURES - 20, statuses
    # the backend's throttle (its message, its Retry-After), not nginx's rate limit
    assert "Muitas tentativas de login" in answers[-1].json()["detail"], answers[-1].text
    assert int(answers[-1].headers["retry-after"]) >= 1


def test_forwarded_for_is_believed_only_from_the_trusted_proxy(proxy: Proxy) -> None:
    """Sent to the backend directly, X-Forwarded-For is ignored: a client that names a new address in every
    request is still locked after its address's free failures. From the proxy's own address it is believed."""
    direct = "127.0.0.5"
    with proxy.direct(direct) as client:
        answers = _until_locked(lambda i: _login(client, f"d-{i}", "errada", **{"X-Forwarded-For": f"198.51.100.{i}"}),
                                ADDRESS_FREE_FAILURES + 10)
    statuses = [r.status_code for r in answers]
    assert statuses[-1] == 429 and statuses.count(401) >= ADDRESS_FREE_FAILURES, statuses
    with proxy.direct(HOST) as client:  # the control: the same header from the trusted address
        assert _login(client, "t-0", "errada", **{"X-Forwarded-For": "198.51.100.200"}).status_code == 401

    # The audit log names the real clients (queried through the proxy with an admin token)
    with proxy.client("127.0.0.9") as client:
        login = _login(client, "admin", ADMIN_PASSWORD)
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

        def address_of(user: str) -> str:
            entries = client.get("/api/v1/admin/auditoria", params={"usuario": user}, headers=headers).json()
            return str(entries[0]["endereco"]) if entries else ""

        expected = {"admin": "127.0.0.9", "d-0": direct, "t-0": "198.51.100.200"}
        _wait(lambda: {user: address_of(user) for user in expected} == expected, "audit log addresses")


def test_login_endpoint_rate_limited_by_the_proxy_per_address(proxy: Proxy) -> None:
    """Malformed logins (400 from the backend: no password work, no throttle record) until nginx's own 429."""
    statuses: list[int] = []
    last: httpx.Response | None = None
    with proxy.client("127.0.0.6") as client:
        while len(statuses) < 10 * LOGIN_BURST and 429 not in statuses:
            last = client.post("/api/v1/auth/token", content=b"{", headers={"Content-Type": "application/json"})
            statuses.append(last.status_code)
    assert last is not None and last.status_code == 429, statuses
    assert last.json()["detail"].startswith("Muitas requisições deste endereço")
    assert last.headers["retry-after"] == "1"
    assert len(statuses) > LOGIN_BURST and set(statuses[:-1]) == {400}
    with proxy.client("127.0.0.7") as client:  # another address has its own budget
        assert client.post("/api/v1/auth/token", content=b"{").status_code == 400


def test_trusted_proxy_connections_are_not_capped_per_address(proxy: Proxy) -> None:
    """The backend's per-address cap would otherwise cap the whole site at one client's share behind nginx."""
    def open_idle(source: str, n: int) -> list[socket.socket]:
        out = []
        for _ in range(n):
            s = socket.socket()
            s.bind((source, 0))
            s.connect((HOST, proxy.backend.port))
            s.setblocking(False)
            out.append(s)
        return out

    def closed(sockets: list[socket.socket]) -> int:
        n = 0
        for s in sockets:
            try:
                n += s.recv(1) == b""
            except BlockingIOError:
                pass
            except ConnectionResetError:
                n += 1
        return n

    from_proxy = open_idle(HOST, 3 * CAP)
    from_client = open_idle("127.0.0.8", 3 * CAP)
    try:
        _wait(lambda: closed(from_client) == 2 * CAP, "the client's connections beyond the cap were not closed")
        assert closed(from_proxy) == 0
        with proxy.client("127.0.0.8") as client:  # and the client still gets through the proxy
            assert client.get("/health").status_code == 200
    finally:
        for s in from_proxy + from_client:
            s.close()


@pytest.mark.parametrize(("value", "allowed"), [
    ("", []),
    ("127.0.0.1", ["127.0.0.1/32"]),
    (" 10.0.0.0/24 , ::1 ", ["10.0.0.0/24", "::1/128"]),
])
def test_trusted_proxies_setting(value: str, allowed: list[str]) -> None:
    options = server_options(Settings(http_trusted_proxies=value))
    assert options["forwarded_allow_ips"] == allowed
    assert options["proxy_headers"] is bool(allowed)


@pytest.mark.parametrize("value", ["*", "nginx.local", "10.0.0.300"])
def test_trusted_proxies_setting_refuses_what_is_not_an_address(value: str) -> None:
    with pytest.raises(ConfigError, match="BACKEND_HTTP_TRUSTED_PROXIES"):
        server_options(Settings(http_trusted_proxies=value))
