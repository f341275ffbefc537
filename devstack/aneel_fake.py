"""A local fake of ANEEL's CKAN open-data API (dadosabertos.aneel.gov.br), for tests and the offline demo.

The backend's ANEEL client must survive the real portal, which is slow, pages, answers in CKAN's own shapes and
sometimes serves an HTML maintenance page; tests cannot depend on the internet, so this server reproduces ANEEL's
documented behaviour (docs/analytics.md): ``/api/3/action/datastore_search`` over GET (query
string, ``filters`` as a JSON string) and POST (JSON body), the CKAN envelope and key order, ``_links`` built
from the raw request, ``limit`` default 100 capped at ``rows_max``, ``offset``, ``include_total``, ``filters``
(list value = IN), ``q`` (token match + ``rank``), ``sort`` (lexicographic: every column is text), ``fields``,
``distinct``; ``package_show``/``resource_show`` and the CSV download (``;``, fully quoted, CRLF); error bodies
for 404 (unknown resource), 409 (unknown field, bad JSON), 400 JSON *string* for an unknown action (such as
``datastore_search_sql``, which ANEEL no longer offers). Faults are injected per request: HTTP 500, an HTML
maintenance page, a slow response, a dropped connection.

It is seeded from :mod:`devstack.aneel_rows` (real rows, quirk rows and an optional bulk distributor) and also
serves the Componentes Tarifárias package (``componentes-tarifarias``, one resource per year) the GD II bill
takes its TUSD Fio B from.

Standalone: ``python -m devstack.aneel_fake --port 8765``; faults via ``POST /_fake/faults`` with
``{"kind": "500" | "html" | "slow" | "drop", "count": 1, "delay": 2.0}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, Final

from devstack.aneel_rows import (
    ACIONAMENTO,
    ACIONAMENTO_FIELDS,
    ADICIONAL,
    ADICIONAL_FIELDS,
    BANDEIRA_ACIONAMENTO_RESOURCE,
    BANDEIRA_ADICIONAL_RESOURCE,
    BANDEIRAS_PACKAGE,
    COMPONENT_FIELDS,
    COMPONENTS,
    COMPONENTS_PACKAGE,
    COMPONENTS_RESOURCES,
    QUIRK_TARIFFS,
    REAL_TARIFFS,
    SCEE_TARIFFS,
    TARIFF_FIELDS,
    TARIFFS_PACKAGE,
    TARIFFS_RESOURCE,
    bulk_tariffs,
)
from devstack.httpserver import ThreadedServer

HELP_BASE: Final = "https://dadosabertos.aneel.gov.br/api/3/action/help_show?name="



@dataclass
class Resource:
    id: str
    name: str
    package_id: str
    fields: tuple[str, ...]
    records: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Fault:
    kind: str
    """``500`` | ``html`` (503 HTML maintenance page) | ``html200`` (HTML with status 200) | ``slow`` | ``drop``"""
    delay: float = 0.0


class FakeCkan:
    """The fake server; ``start()`` binds 127.0.0.1 on ``port`` (0 = free port) and serves from a thread."""

    def __init__(self, port: int = 0, *, rows_max: int = 32000, seed: bool = True, bulk: int = 0) -> None:
        self.rows_max = rows_max
        self.port = port
        self.resources: dict[str, Resource] = {}
        self.faults: deque[Fault] = deque()
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._http: ThreadedServer | None = None
        self.add_resource(Resource(TARIFFS_RESOURCE, "tarifas-homologadas-distribuidoras-energia-eletrica",
                                   TARIFFS_PACKAGE, TARIFF_FIELDS))
        self.add_resource(Resource(BANDEIRA_ACIONAMENTO_RESOURCE, "bandeira-tarifaria-acionamento",
                                   BANDEIRAS_PACKAGE, ACIONAMENTO_FIELDS))
        self.add_resource(Resource(BANDEIRA_ADICIONAL_RESOURCE, "bandeira-tarifaria-adicional",
                                   BANDEIRAS_PACKAGE, ADICIONAL_FIELDS))
        for year, rid in COMPONENTS_RESOURCES.items():
            self.add_resource(Resource(rid, f"componentes-tarifarias-{year}", COMPONENTS_PACKAGE, COMPONENT_FIELDS))
        if seed:
            self.add_records(TARIFFS_RESOURCE, REAL_TARIFFS + SCEE_TARIFFS + QUIRK_TARIFFS + bulk_tariffs(bulk))
            for year, rows in COMPONENTS.items():
                self.add_records(COMPONENTS_RESOURCES[year], rows)
            self.add_records(BANDEIRA_ACIONAMENTO_RESOURCE, ACIONAMENTO)
            self.add_records(BANDEIRA_ADICIONAL_RESOURCE, ADICIONAL)

    # --- control ----------------------------------------------------------------------------------------------

    def add_resource(self, res: Resource) -> None:
        self.resources[res.id] = res

    def add_records(self, resource_id: str, rows: Iterable[Mapping[str, str]]) -> None:
        with self._lock:
            res = self.resources[resource_id]
            for row in rows:
                res.records.append({"_id": len(res.records) + 1, **row})  # type: ignore[dict-item]

    def replace_records(self, resource_id: str, rows: Iterable[Mapping[str, str]]) -> None:
        with self._lock:
            self.resources[resource_id].records = []
        self.add_records(resource_id, rows)

    def inject(self, kind: str, count: int = 1, delay: float = 0.0) -> None:
        """The next ``count`` action requests fail with ``kind``."""
        with self._lock:
            self.faults.extend(Fault(kind, delay) for _ in range(count))

    def action_calls(self, action: str = "datastore_search") -> list[dict[str, Any]]:
        with self._lock:
            return [p for _m, a, p in self.requests if a == action]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeCkan:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._http = ThreadedServer(Handler, self.port, "aneel-fake")
        self.port = self._http.port
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None

    def __enter__(self) -> FakeCkan:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- CKAN semantics ---------------------------------------------------------------------------------------

    def datastore_search(self, params: dict[str, Any], raw_path: str, raw_query: str) -> tuple[int, Any]:
        rid = params.get("resource_id") or params.get("id")
        if not rid:
            return 409, _error("datastore_search", {"resource_id": ["Missing value"], "__type": "Validation Error"})
        res = self.resources.get(str(rid))
        if res is None:
            return 404, _error("datastore_search", {"__type": "Not Found Error",
                                                    "message": f'Not found: Resource "{rid}" was not found.'})
        columns = ("_id", *res.fields)
        filters = params.get("filters") or {}
        if isinstance(filters, str):
            try:
                filters = json.loads(filters)
            except json.JSONDecodeError:
                return 409, _error("datastore_search", {"filters": ["Cannot parse JSON"],
                                                        "__type": "Validation Error"})
        if not isinstance(filters, dict):
            return 409, _error("datastore_search", {"filters": ["Not a JSON object"], "__type": "Validation Error"})
        for k in filters:
            if k not in columns:
                return 409, _error("datastore_search", {"filters": [f'invalid value "{k}"'],
                                                        "__type": "Validation Error"})
        try:
            limit = int(params.get("limit", 100))
            offset = int(params.get("offset", 0))
        except (TypeError, ValueError):
            return 409, _error("datastore_search", {"limit": ["Invalid integer"], "__type": "Validation Error"})
        if limit < 0 or offset < 0:
            return 409, _error("datastore_search", {"limit": ["Must be a natural number"],
                                                    "__type": "Validation Error"})
        limit = min(limit, self.rows_max)
        include_total = str(params.get("include_total", "true")).lower() not in ("false", "0")
        with self._lock:
            rows: list[dict[str, Any]] = [dict(r) for r in res.records]
        for k, v in filters.items():
            wanted = {str(x) for x in v} if isinstance(v, list) else {str(v)}
            rows = [r for r in rows if str(r.get(k)) in wanted]
        q = params.get("q")
        ranked = False
        if isinstance(q, str) and q.strip():
            tokens = q.casefold().split()
            rows = [dict(r, rank=0.0573) for r in rows
                    if all(t in " ".join(str(x) for x in r.values()).casefold() for t in tokens)]
            ranked = True
        sort = params.get("sort")
        if sort:
            keys = []
            for part in str(sort).split(","):
                bits = part.strip().split()
                if not bits or bits[0].strip('"') not in columns:
                    return 409, _error("datastore_search", {"sort": [f'field "{part.strip()}" not in table'],
                                                            "__type": "Validation Error"})
                keys.append((bits[0].strip('"'), len(bits) > 1 and bits[1].lower() == "desc"))
            for k, desc in reversed(keys):
                rows.sort(key=_sort_key(k), reverse=desc)
        fields_param = params.get("fields")
        out_cols = list(columns) + (["rank"] if ranked else [])
        if fields_param:
            wanted_cols = fields_param if isinstance(fields_param, list) else str(fields_param).split(",")
            out_cols = [c.strip() for c in wanted_cols]
            rows = [{c: r.get(c) for c in out_cols} for r in rows]
            if str(params.get("distinct", "false")).lower() == "true":
                seen, uniq = set(), []
                for r in rows:
                    key = tuple(r.values())
                    if key not in seen:
                        seen.add(key)
                        uniq.append(r)
                rows = uniq
        total = len(rows)
        page = rows[offset: offset + limit]
        result: dict[str, Any] = {"include_total": include_total, "limit": limit, "records_format": "objects",
                                  "resource_id": res.id, "total_estimation_threshold": None}
        for echo in ("filters", "sort", "q"):
            if echo in params:
                result[echo] = filters if echo == "filters" else params[echo]
        if "offset" in params:
            result["offset"] = offset
        result["records"] = page
        result["fields"] = [{"id": c, "type": "int" if c == "_id" else "float" if c == "rank" else "text"}
                            for c in out_cols]
        result["_links"] = _links(raw_path, raw_query, offset, limit)
        if include_total:
            result["total"] = total
            result["total_was_estimated"] = False
        return 200, {"help": HELP_BASE + "datastore_search", "success": True, "result": result}

    def resource_show(self, params: dict[str, Any]) -> tuple[int, Any]:
        res = self.resources.get(str(params.get("id", "")))
        if res is None:
            return 404, _error("resource_show", {"__type": "Not Found Error",
                                                 "message": "Not found: Resource was not found."})
        return 200, {"help": HELP_BASE + "resource_show", "success": True, "result": self._resource_meta(res)}

    def package_show(self, params: dict[str, Any]) -> tuple[int, Any]:
        pid = str(params.get("id", ""))
        names = {"tarifas-distribuidoras-energia-eletrica": TARIFFS_PACKAGE, "bandeiras-tarifarias": BANDEIRAS_PACKAGE}
        pid = names.get(pid, pid)
        resources = [self._resource_meta(r) for r in self.resources.values() if r.package_id == pid]
        if not resources:
            return 404, _error("package_show", {"__type": "Not Found Error", "message": "Not found"})
        return 200, {"help": HELP_BASE + "package_show", "success": True,
                     "result": {"id": pid, "num_resources": len(resources), "resources": resources}}

    def _resource_meta(self, res: Resource) -> dict[str, Any]:
        return {"id": res.id, "package_id": res.package_id, "name": res.name, "format": "CSV",
                "datastore_active": True, "last_modified": "2026-10-02T10:00:00",
                "url": f"{self.url}/dataset/{res.package_id}/resource/{res.id}/download/{res.name}.csv"}

    def csv(self, resource_id: str) -> bytes | None:
        res = self.resources.get(resource_id)
        if res is None:
            return None
        lines = [";".join(f'"{c}"' for c in res.fields)]
        with self._lock:
            for r in res.records:
                lines.append(";".join('"' + str(r.get(c, "")).replace('"', '""') + '"' for c in res.fields))
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _sort_key(column: str) -> Callable[[dict[str, Any]], str]:
    """Text columns sort lexicographically (as in ANEEL's DataStore, where every column is text)."""
    if column == "_id":
        return lambda r: f"{r['_id']:012d}"
    return lambda r: str(r.get(column) or "")


def _error(action: str, error: dict[str, Any]) -> dict[str, Any]:
    return {"help": HELP_BASE + action, "success": False, "error": error}


def _links(path: str, query: str, offset: int, limit: int) -> dict[str, str]:
    """CKAN's ``_insert_links``: start = query without offset; next = offset replaced (or appended)."""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    start = [(k, v) for k, v in pairs if k != "offset"]
    if any(k == "offset" for k, _ in pairs):
        nxt = [(k, str(offset + limit) if k == "offset" else v) for k, v in pairs]
    else:
        nxt = [*pairs, ("offset", str(offset + limit))]
    links = {"start": path + ("?" + urllib.parse.urlencode(start) if start else ""),
             "next": path + "?" + urllib.parse.urlencode(nxt)}
    if offset - limit > 0:
        links["prev"] = path + "?" + urllib.parse.urlencode(
            [(k, str(offset - limit) if k == "offset" else v) for k, v in pairs])
    return links


MAINTENANCE_HTML: Final = (b"<html><head><title>Manuten\xc3\xa7\xc3\xa3o</title></head><body><h1>Portal em "
                           b"manuten\xc3\xa7\xc3\xa3o</h1><p>500 INTERNAL SERVER ERROR</p></body></html>")


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeCkan
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, body: bytes, ctype: str = "application/json;charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"))

    def do_GET(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        self._dispatch("GET", parsed.path, parsed.query, params)

    def do_POST(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            self._json(400, "Bad request - JSON Error: Invalid request body")
            return
        if parsed.path == "/_fake/faults":
            self.server_fake.inject(str(body.get("kind", "500")), int(body.get("count", 1)),
                                    float(body.get("delay", 0.0)))
            self._json(200, {"queued": len(self.server_fake.faults)})
            return
        params = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        if isinstance(body, dict):
            params.update(body)
        self._dispatch("POST", parsed.path, parsed.query, params)

    def _dispatch(self, method: str, path: str, query: str, params: dict[str, Any]) -> None:
        fake = self.server_fake
        if "/download/" in path:
            data = fake.csv(path.split("/resource/")[1].split("/")[0]) if "/resource/" in path else None
            if data is None:
                self._send(404, b"Not Found", "text/plain")
            else:
                self._send(200, data, "text/csv")
            return
        if not path.startswith("/api/3/action/"):
            self._send(404, b"<html><body>404 Not Found</body></html>", "text/html")
            return
        action = path.rsplit("/", 1)[1]
        with fake._lock:
            fake.requests.append((method, action, dict(params)))
            fault = fake.faults.popleft() if fake.faults else None
        if fault is not None:
            if fault.kind == "slow":
                time.sleep(fault.delay)
            elif fault.kind == "500":
                self._json(500, _error(action, {"__type": "Internal Server Error", "message": "Internal Server Error"}))
                return
            elif fault.kind in ("html", "html200"):
                self._send(503 if fault.kind == "html" else 200, MAINTENANCE_HTML, "text/html; charset=utf-8")
                return
            elif fault.kind == "drop":
                self.close_connection = True
                self.connection.close()
                return
        if action == "datastore_search":
            status, body = fake.datastore_search(params, path, query)
        elif action == "resource_show":
            status, body = fake.resource_show(params)
        elif action == "package_show":
            status, body = fake.package_show(params)
        else:
            status, body = 400, f"Bad request - Action name not known: {action}"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            self._json(status, body)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Fake ANEEL CKAN server (offline demo and tests)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--bulk", type=int, default=0, help="extra generated tariff rows (paging)")
    args = ap.parse_args(argv)
    fake = FakeCkan(args.port, bulk=args.bulk).start()
    print(f"fake ANEEL CKAN em {fake.url}/api/3/action/datastore_search", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
