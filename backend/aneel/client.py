"""Async client for ANEEL's CKAN ``datastore_search`` (dadosabertos.aneel.gov.br).

Pages with ``limit``/``offset`` and ``include_total=false`` (ANEEL's CKAN threw 500s on large pages with totals;
public clients settled on 1000-row pages) and stops at the first short page. Transient failures — timeouts,
connection drops, HTTP 5xx, and bodies that are not CKAN JSON (the HTML maintenance page served around
publications) — are retried with exponential backoff (tenacity). 4xx answers are the caller's fault and are
raised at once with CKAN's error body: 404 unknown resource, 409 validation (unknown field), 400 unknown action
(``datastore_search_sql`` no longer exists at ANEEL).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from backend.aneel.records import (
    BANDEIRA_ACIONAMENTO_RESOURCE,
    BANDEIRA_ADICIONAL_RESOURCE,
    COMPONENTS_PACKAGE,
    TARIFFS_RESOURCE,
    AneelFormatError,
    BandeiraAdder,
    BandeiraMonth,
    ComponentRecord,
    TariffRecord,
    parse_bandeira_adder,
    parse_bandeira_month,
    parse_component,
    parse_tariff,
)

log = logging.getLogger(__name__)
DEFAULT_BASE_URL: Final = "https://dadosabertos.aneel.gov.br"
T = TypeVar("T")


class AneelError(Exception):
    """Base class of the ANEEL client's errors."""


class AneelUnavailable(AneelError):
    """ANEEL did not answer usefully after every retry (timeouts, 5xx, HTML pages); the last cause is chained."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class AneelRequestError(AneelError):
    """A 4xx answer: the request is wrong and retrying will not help. Carries CKAN's error body."""

    def __init__(self, status: int, error: Any, *, action: str) -> None:
        kind = error.get("__type", "") if isinstance(error, dict) else ""
        detail = error.get("message") if isinstance(error, dict) else None
        if isinstance(error, dict) and detail is None:
            detail = "; ".join(f"{k}: {v}" for k, v in error.items() if k != "__type")
        super().__init__(f"ANEEL {action}: HTTP {status} {kind} {detail if detail is not None else error}".strip())
        self.status = status
        self.error = error
        self.kind = kind
        self.action = action


class AneelNotFound(AneelRequestError):
    """404: unknown resource id."""


class AneelValidationError(AneelRequestError):
    """409: CKAN rejected a parameter (unknown filter or sort field, bad JSON)."""


class AneelUnknownAction(AneelRequestError):
    """400 with a JSON string body: the action does not exist on this CKAN (e.g. ``datastore_search_sql``)."""


class _Transient(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class AneelClient:
    """One client per process; ``async with AneelClient(...) as c`` or call :meth:`aclose`."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout_s: float = 20.0,
        page_size: int = 1000,
        attempts: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 15.0,
        max_pages: int = 1000,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.max_pages = max_pages
        self.requests = 0
        self.retries = 0
        self.skipped_records = 0
        self._own = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), headers={
            "User-Agent": "cds-backend (+https://github.com/; energia)", "Accept": "application/json"})

    async def __aenter__(self) -> AneelClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    # --- transport ------------------------------------------------------------------------------------------

    async def _once(self, action: str, params: Mapping[str, Any]) -> Any:
        self.requests += 1
        url = f"{self.base_url}/api/3/action/{action}"
        try:
            resp = await self._http.get(url, params=dict(params))
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        try:
            body = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            snippet = resp.text[:80].replace("\n", " ")
            raise _Transient(f"HTTP {resp.status_code} sem JSON ({snippet!r})") from exc
        if resp.status_code >= 500:
            raise _Transient(f"HTTP {resp.status_code}: {body}")
        if resp.status_code == 400 and isinstance(body, str) and "Action name not known" in body:
            raise AneelUnknownAction(400, body, action=action)
        if 400 <= resp.status_code < 500:
            error = body.get("error", body) if isinstance(body, dict) else body
            cls = {404: AneelNotFound, 409: AneelValidationError}.get(resp.status_code, AneelRequestError)
            raise cls(resp.status_code, error, action=action)
        if not isinstance(body, dict) or body.get("success") is not True or "result" not in body:
            raise _Transient(f"resposta CKAN inesperada: {str(body)[:80]}")
        return body["result"]

    async def call(self, action: str, params: Mapping[str, Any]) -> Any:
        """One CKAN action with retries on transient failures; returns ``result``."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.backoff_max_s),
            stop=stop_after_attempt(self.attempts),
            reraise=False,
            before_sleep=self._before_sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(action, params)
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            raise AneelUnavailable(f"ANEEL indisponível após {self.attempts} tentativas: {cause}",
                                   attempts=self.attempts) from cause
        raise AssertionError("unreachable")  # pragma: no cover

    def _before_sleep(self, state: Any) -> None:
        self.retries += 1
        log.warning("aneel retry", extra={"attempt": state.attempt_number,
                                           "error": str(state.outcome.exception()) if state.outcome else ""})

    # --- datastore_search -----------------------------------------------------------------------------------

    async def datastore_search(
        self,
        resource_id: str,
        *,
        filters: Mapping[str, Any] | None = None,
        q: str | None = None,
        sort: str | None = None,
        fields: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> dict[str, Any]:
        """One page (the raw CKAN ``result``)."""
        params: dict[str, Any] = {"resource_id": resource_id, "limit": limit or self.page_size,
                                  "include_total": "false"}
        if offset:
            params["offset"] = offset
        if filters:
            params["filters"] = json.dumps(dict(filters), ensure_ascii=False)
        if q:
            params["q"] = q
        if sort:
            params["sort"] = sort
        if fields:
            params["fields"] = ",".join(fields)
        result = await self.call("datastore_search", params)
        if not isinstance(result, dict) or not isinstance(result.get("records"), list):
            raise AneelError("datastore_search sem 'records'")
        return result

    async def records(
        self,
        resource_id: str,
        *,
        filters: Mapping[str, Any] | None = None,
        q: str | None = None,
        sort: str | None = "_id",
    ) -> list[dict[str, Any]]:
        """Every matching row, page by page, until a short page (stable order by ``_id`` unless told)."""
        out: list[dict[str, Any]] = []
        offset = 0
        for _ in range(self.max_pages):
            page = await self.datastore_search(resource_id, filters=filters, q=q, sort=sort, offset=offset)
            rows = page["records"]
            out.extend(rows)
            # The server may cap the limit (rows_max); it reports the effective one.
            effective = int(page.get("limit") or self.page_size)
            if len(rows) < effective or not rows:
                return out
            offset += len(rows)
        raise AneelError(f"mais de {self.max_pages} páginas em {resource_id}: consulta ampla demais")

    def _parse_all(self, rows: Sequence[Mapping[str, Any]], parse: Callable[[Mapping[str, Any]], T]) -> list[T]:
        out: list[T] = []
        for row in rows:
            try:
                out.append(parse(row))
            except AneelFormatError as exc:
                self.skipped_records += 1
                log.warning("aneel record skipped", extra={"id": row.get("_id"), "error": str(exc)})
        return out

    async def tariffs(self, filters: Mapping[str, Any]) -> list[TariffRecord]:
        """Tariff rows matching ``filters`` (e.g. ``{"NumCNPJDistribuidora": ..., "DscSubGrupo": ["B1"]}``)."""
        return self._parse_all(await self.records(TARIFFS_RESOURCE, filters=filters), parse_tariff)

    async def bandeira_months(self) -> list[BandeiraMonth]:
        return self._parse_all(await self.records(BANDEIRA_ACIONAMENTO_RESOURCE), parse_bandeira_month)

    async def bandeira_adders(self) -> list[BandeiraAdder]:
        return self._parse_all(await self.records(BANDEIRA_ADICIONAL_RESOURCE), parse_bandeira_adder)

    async def component_resources(self) -> dict[int, str]:
        """Year -> resource id of the Componentes Tarifárias resources in the DataStore (``package_show``): ANEEL
        adds one resource per year, so they are discovered rather than hard-coded."""
        result = await self.call("package_show", {"id": COMPONENTS_PACKAGE})
        out: dict[int, str] = {}
        for res in result.get("resources", []) if isinstance(result, dict) else []:
            m = re.fullmatch(r"componentes-tarifarias-(\d{4})(?:\.csv)?", str(res.get("name", "")))
            if m and res.get("datastore_active") and res.get("id"):
                out[int(m[1])] = str(res["id"])
        return out

    async def components(self, resource_id: str, filters: Mapping[str, Any]) -> list[ComponentRecord]:
        """Componentes Tarifárias rows of one yearly resource matching ``filters``."""
        return self._parse_all(await self.records(resource_id, filters=filters), parse_component)

    async def cnpj_of(self, sigla: str) -> str:
        """Resolve a distributor's sigla to its CNPJ (the identity that survives renames)."""
        page = await self.datastore_search(TARIFFS_RESOURCE, filters={"SigAgente": sigla},
                                           sort="DatInicioVigencia desc", limit=1)
        if not page["records"]:
            raise AneelNotFound(404, {"__type": "Not Found Error", "message": f"distribuidora {sigla!r}"},
                                action="datastore_search")
        return str(page["records"][0]["NumCNPJDistribuidora"]).zfill(14)

    async def datastore_search_sql(self, sql: str) -> Any:
        """Kept to report clearly that ANEEL removed it (raises :class:`AneelUnknownAction` there)."""
        return await self.call("datastore_search_sql", {"sql": sql})
