"""A local fake of ONS's open data — the CKAN portal (dados.ons.org.br) and its S3 bucket — for tests and the demo.

The backend must survive the real thing, which cannot be reached from tests: so this server reproduces the shapes
the research notes record (docs/ons.md), on one port:

* CKAN under ``/api/3/action/``: ``package_show``, ``package_search``, ``package_list``, with ONS's resource
  listings and CKAN's error shapes (:mod:`devstack.ons_catalog`);
* S3 under ``/dataset/<folder>/<FILE>``: GET and HEAD with ``ETag`` (MD5, or multipart-style ``"…-N"`` past
  8 MiB), ``Last-Modified``, ``Content-Length``, ``Accept-Ranges: bytes``, no version id; ``Range`` (206 with
  ``Content-Range``, 416 ``InvalidRange``), ``If-Range``, ``If-None-Match`` (304); ``NoSuchKey`` XML errors. XLSX
  resources are listed but not served (CDS never reads them): they answer NoSuchKey.

The files are made on first request from :class:`~devstack.ons_model.SinModel` (seeded) in the vintage formats of
:mod:`devstack.ons_files`, up to ``until`` (the last day published: yesterday by default), and kept for the other
fakes of the process (the same parameters make the same bytes). Tests drive it through
methods: :meth:`FakeOns.publish` moves ``until`` (the current year's file grows), :meth:`FakeOns.revise` rewrites
a file with revised values (new ETag and Last-Modified), :meth:`FakeOns.fail` makes the next requests fail
(``500``, ``503``, ``drop`` the connection, ``cut`` a download half-way, ``html`` maintenance page),
:attr:`FakeOns.down` makes every request fail, :meth:`FakeOns.rename` moves a dataset to a new slug.

Standalone: ``python -m devstack.ons_fake --port 18766`` (``--until``, ``--seed``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import email.utils
import hashlib
import json
import threading
import time
import urllib.parse
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Final

from devstack.httpserver import ThreadedServer
from devstack.ons_catalog import PACKAGES, Package, ckan, error, package, package_dict, years
from devstack.ons_files import to_csv, to_parquet
from devstack.ons_model import SinModel
from protocol.timebase import TZ

PART: Final = 8 * 1024 * 1024
MADE_BUDGET: Final = 256 * 1024 * 1024
"""Bytes of generated files kept for other fakes of the same process (:class:`_Made`)."""


@dataclass
class StoredFile:
    body: bytes
    etag: str
    modified: float


class _Made:
    """Generated file bodies and ETags shared by every fake of the process, oldest dropped past
    :data:`MADE_BUDGET`. A file is a function of the model's parameters, the dataset, year, format, ``until`` and
    the revisions, so a test suite that starts a fresh fake per test makes each file once, not once per test (a
    year of the balance takes about half a second). Last-Modified is not shared: each fake dates its own files."""

    def __init__(self) -> None:
        self._bodies: OrderedDict[tuple[Any, ...], tuple[bytes, str]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> tuple[bytes, str] | None:
        with self._lock:
            made = self._bodies.get(key)
            if made is not None:
                self._bodies.move_to_end(key)
            return made

    def put(self, key: tuple[Any, ...], body: bytes, etag: str) -> None:
        with self._lock:
            if key in self._bodies:
                return
            self._bodies[key] = (body, etag)
            self._size += len(body)
            while self._size > MADE_BUDGET and len(self._bodies) > 1:
                self._size -= len(self._bodies.popitem(last=False)[1][0])


_MADE: Final = _Made()


@dataclass
class Fault:
    kind: str
    where: str


@dataclass
class FakeOns:
    """The fake server; ``start()`` binds 127.0.0.1:``port`` (0 = a free port) and serves from a thread."""

    port: int = 0
    seed: int = 1
    until: dt.date = field(default_factory=lambda: dt.datetime.now(TZ).date() - dt.timedelta(days=1))
    down: bool = False
    """Every request answers 500 (CKAN) or InternalError (S3) while True."""
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    """(method, path with query, the conditional and range headers) of every request."""
    slugs: dict[str, str] = field(default_factory=dict)
    fillers: int = 0
    """Other packages ``package_search`` finds before the real ones (``<slug>-historico-NNN``): forces paging."""

    def __post_init__(self) -> None:
        self.model = SinModel(self.seed)
        self.revisions: dict[tuple[str, int], dict[tuple[str, str, str], float | None]] = {}
        self.faults: deque[Fault] = deque()
        self._files: dict[tuple[str, int, str], StoredFile] = {}
        self._lock = threading.Lock()
        self._http: ThreadedServer | None = None
        self.slugs = self.slugs or {p.slug: p.key for p in PACKAGES}

    # --- control ------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeOns:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._http = ThreadedServer(Handler, self.port, "ons-fake")
        self.port = self._http.port
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None

    def __enter__(self) -> FakeOns:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def publish(self, until: dt.date) -> None:
        """ONS publishes up to ``until``: the files of the years it touches are rewritten (they grow)."""
        with self._lock:
            old, self.until = self.until, until
            for key in [k for k in self._files if min(old, until).year <= k[1] <= max(old, until).year]:
                del self._files[key]

    def revise(self, dataset: str, year: int, wall: str, subsystem: str, column: str, value: float | None) -> None:
        """Rewrite ``dataset``'s file of ``year`` with ``column`` of ``subsystem`` at local ``wall`` time
        (``YYYY-MM-DD HH:MM:SS``) revised to ``value``; both formats get a new ETag and Last-Modified."""
        with self._lock:
            self.revisions.setdefault((dataset, year), {})[(wall, subsystem, column)] = value
            for key in [k for k in self._files if k[:2] == (dataset, year)]:
                del self._files[key]

    def fail(self, kind: str, count: int = 1, where: str = "all") -> None:
        """The next ``count`` requests to ``where`` (``ckan``, ``s3`` or ``all``) fail with ``kind``."""
        with self._lock:
            self.faults.extend(Fault(kind, where) for _ in range(count))

    def rename(self, old_slug: str, new_slug: str) -> None:
        """The dataset moves to a new slug: ``package_show`` of the old one answers 404."""
        with self._lock:
            self.slugs[new_slug] = self.slugs.pop(old_slug)

    def file_requests(self, method: str = "GET") -> list[str]:
        with self._lock:
            return [path for m, path, _ in self.requests if m == method and path.startswith("/dataset/")]

    # --- content ------------------------------------------------------------------------------------------------

    def package(self, key: str) -> Package:
        return package(key)

    def package_dict(self, slug: str, pkg: Package) -> dict[str, Any]:
        """The ``package_show`` result of ``pkg`` under ``slug``, as served now."""
        return package_dict(slug, pkg, self.url, self.until)

    def file(self, pkg: Package, year: int, fmt: str) -> StoredFile:
        with self._lock:
            stored = self._files.get((pkg.key, year, fmt))
            if stored is not None:
                return stored
            revisions = dict(self.revisions.get((pkg.key, year), {}))
            until = self.until
        key = (self.model.seed, self.model.international_mw, pkg.key, year, fmt, until,
               tuple(sorted(revisions.items())))
        made = _MADE.get(key)
        if made is None:
            table = pkg.make(self.model, year, until, revisions)
            body = to_parquet(pkg.key, year, table) if fmt == "parquet" else to_csv(pkg.key, year, table)
            if len(body) > PART:
                parts = [hashlib.md5(body[i:i + PART]).digest() for i in range(0, len(body), PART)]
                etag = f'"{hashlib.md5(b"".join(parts)).hexdigest()}-{len(parts)}"'
            else:
                etag = f'"{hashlib.md5(body).hexdigest()}"'
            _MADE.put(key, body, etag)
        else:
            body, etag = made
        if year < until.year and not revisions:
            modified = dt.datetime(year + 1, 1, 2, 15, tzinfo=dt.UTC).timestamp()
        else:
            modified = max(time.time(), dt.datetime.combine(until, dt.time(15), dt.UTC).timestamp())
        with self._lock:
            previous = self._files.get((pkg.key, year, fmt))
            stored = StoredFile(body, etag, float(int(modified)))
            if previous is None:
                self._files[(pkg.key, year, fmt)] = stored
            return self._files[(pkg.key, year, fmt)]

    def locate(self, path: str) -> tuple[Package, int, str] | None:
        """``/dataset/<folder>/<STEM>_<YYYY>.<ext>`` -> (package, year, format)."""
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "dataset":
            return None
        name, _, ext = parts[2].rpartition(".")
        stem, _, year = name.rpartition("_")
        for pkg in PACKAGES:
            known = year.isdigit() and int(year) in years(pkg, self.until)
            if (pkg.folder, pkg.stem) == (parts[1], stem) and known and ext in ("csv", "parquet") and \
                    (ext == "csv" or int(year) >= pkg.parquet_from):
                return pkg, int(year), ext
        return None

def s3_error(code: str, message: str, key: str) -> bytes:
    request_id = uuid.uuid4().hex[:16].upper()
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<Key>{key}</Key><RequestId>{request_id}</RequestId><HostId>fake+ons/{request_id}=</HostId>"
            "</Error>").encode()


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> inclusive (first, last); None when unsatisfiable."""
    spec = header.strip().removeprefix("bytes=")
    first, _, last = spec.partition("-")
    try:
        if not first:
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 and size else None
        a = int(first)
        b = min(int(last), size - 1) if last else size - 1
    except ValueError:
        return None
    return (a, b) if a <= b and a < size else None


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeOns
    protocol_version = "HTTP/1.1"
    server_version = "AmazonS3"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, headers: dict[str, str], *, head: bool = False) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode(),
                   {"Content-Type": "application/json;charset=utf-8"})

    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def _fault(self, where: str) -> Fault | None:
        fake = self.server_fake
        with fake._lock:
            if fake.down:
                return Fault("500", where)
            if fake.faults and fake.faults[0].where in ("all", where):
                return fake.faults.popleft()
        return None

    def _handle(self, *, head: bool) -> None:
        fake = self.server_fake
        parsed = urllib.parse.urlsplit(self.path)
        wanted = {k: v for k, v in self.headers.items() if k.lower() in ("range", "if-range", "if-none-match")}
        with fake._lock:
            fake.requests.append(("HEAD" if head else "GET", self.path, wanted))
        if parsed.path.startswith("/api/3/action/"):
            self._ckan(parsed)
        else:
            self._s3(parsed.path, head=head)

    def _ckan(self, parsed: urllib.parse.SplitResult) -> None:
        action = parsed.path.rsplit("/", 1)[1]
        fault = self._fault("ckan")
        if fault is not None and self._apply(fault, "application/json"):
            return
        fake = self.server_fake
        with fake._lock:
            slugs, fillers = dict(fake.slugs), fake.fillers
        status, body = ckan(action, dict(urllib.parse.parse_qsl(parsed.query)), slugs=slugs, fillers=fillers,
                            url=fake.url, until=fake.until)
        self._json(status, body)

    def _apply(self, fault: Fault, ctype: str) -> bool:
        """Answer with ``fault``; False when it only affects the body (``cut``: the caller sends half of it)."""
        if fault.kind == "cut":
            return False
        if fault.kind == "drop":
            self.close_connection = True
            self.connection.close()
        elif fault.kind == "html":
            self._send(503, b"<html><body><h1>Em manuten\xc3\xa7\xc3\xa3o</h1></body></html>",
                       {"Content-Type": "text/html"})
        elif "json" in ctype:
            self._json(int(fault.kind) if fault.kind.isdigit() else 500,
                       error("x", {"message": "Internal Server Error", "__type": "Internal Server Error"}))
        else:
            code = "SlowDown" if fault.kind == "503" else "InternalError"
            self._send(503 if fault.kind == "503" else 500, s3_error(code, "We encountered an internal error.", ""),
                       {"Content-Type": "application/xml"})
        return True

    def _s3(self, path: str, *, head: bool) -> None:
        fake = self.server_fake
        fault = self._fault("s3")
        if fault is not None and self._apply(fault, "application/xml"):
            return
        located = fake.locate(path)
        key = urllib.parse.unquote(path.lstrip("/"))
        if located is None:
            self._send(404, b"" if head else s3_error("NoSuchKey", "The specified key does not exist.", key),
                       {"Content-Type": "application/xml"}, head=head)
            return
        pkg, year, fmt = located
        stored = fake.file(pkg, year, fmt)
        headers = {"ETag": stored.etag, "Last-Modified": email.utils.formatdate(stored.modified, usegmt=True),
                   "Accept-Ranges": "bytes", "Server": "AmazonS3", "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
                   "Content-Type": "binary/octet-stream" if fmt == "parquet" else "text/csv"}
        if self.headers.get("If-None-Match") == stored.etag:
            self._send(304, b"", headers, head=True)
            return
        body, status = stored.body, 200
        wanted = self.headers.get("Range")
        if wanted and self.headers.get("If-Range", stored.etag) == stored.etag:
            span = byte_range(wanted, len(body))
            if span is None:
                self._send(416, s3_error("InvalidRange", "The requested range is not satisfiable", key),
                           {"Content-Type": "application/xml"}, head=head)
                return
            headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{len(body)}"
            body, status = body[span[0]:span[1] + 1], 206
        if fault is not None and fault.kind == "cut" and not head:
            headers["Content-Length"] = str(len(body))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
            self.close_connection = True
            self.connection.close()
            return
        self._send(status, body, headers, head=head)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Fake ONS open data (CKAN portal + S3 files) for the offline demo")
    ap.add_argument("--port", type=int, default=18766)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--until", default="", help="last published day, YYYY-MM-DD (default: yesterday)")
    args = ap.parse_args(argv)
    fake = FakeOns(args.port, seed=args.seed)
    if args.until:
        fake.until = dt.date.fromisoformat(args.until)
    fake.start()
    print(f"fake ONS em {fake.url}/api/3/action/package_show?id=balanco-energia-subsistema", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
