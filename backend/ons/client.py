"""Async client for ONS's open data: CKAN discovery on dados.ons.org.br, files on its S3 bucket (thin I/O shell).

* ``package_show?id=<slug>`` lists a dataset's resources; when a slug is gone (ONS renamed ``geracao-usina`` to
  ``geracao-usina-2`` once), :meth:`OnsClient.find_package` pages through ``package_search`` for its successor.
* ``HEAD`` on a file gives ``ETag``, ``Last-Modified`` and ``Content-Length`` without downloading it: that is how
  a pull knows what changed (files are rewritten in place, with no version ids, so there is nothing else).
* ``GET`` downloads a file; when the connection drops mid-body the next attempt asks only for the rest
  (``Range: bytes=<n>-`` with ``If-Range: <etag>``): S3 answers 206 with the rest, or 200 with the whole new file
  if it changed meanwhile.

Transient failures — timeouts, dropped connections, HTTP 5xx, a CKAN answer that is not CKAN JSON — are retried
with exponential backoff (tenacity) and end in :class:`OnsUnavailable`. 4xx answers are final: CKAN's 404/409
and S3's ``NoSuchKey`` become :class:`OnsNotFound` / :class:`OnsRequestError` with the server's message. File URLs
come from the portal, so a URL on a host that is neither the portal's nor an allowed file host is refused.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Final

import httpx
import msgspec
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_attempt, wait_exponential

log = logging.getLogger(__name__)
DEFAULT_BASE_URL: Final = "https://dados.ons.org.br"
SEARCH_PAGE: Final = 50


class OnsError(Exception):
    """Base class of the ONS client's errors."""


class OnsUnavailable(OnsError):
    """ONS did not answer usefully after every retry; the last cause is chained."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class OnsRequestError(OnsError):
    """A 4xx answer: retrying will not help. ``code`` is CKAN's ``__type`` or S3's error code."""

    def __init__(self, status: int, code: str, message: str, *, url: str) -> None:
        super().__init__(f"ONS HTTP {status} {code}: {message} ({url})".strip())
        self.status = status
        self.code = code
        self.url = url


class OnsNotFound(OnsRequestError):
    """404: unknown package (CKAN) or ``NoSuchKey`` (S3)."""


class FileMeta(msgspec.Struct, frozen=True):
    """What S3 says about a file: enough to tell whether it changed since it was last read."""

    etag: str = ""
    last_modified: str = ""
    size: int | None = None

    def same_as(self, other: FileMeta) -> bool:
        """Same content as ``other``: equal ETags (when both have one) and equal Last-Modified and size."""
        if self.etag and other.etag and self.etag != other.etag:
            return False
        return (self.last_modified, self.size) == (other.last_modified, other.size)


class _Transient(Exception):
    """Worth retrying; carries the bytes of a partial download."""


def _s3_error(body: bytes) -> tuple[str, str]:
    text = body.decode("utf-8", "replace")
    code = re.search(r"<Code>([^<]*)</Code>", text)
    message = re.search(r"<Message>([^<]*)</Message>", text)
    return (code.group(1) if code else "", message.group(1) if message else text[:120])


def _meta(response: httpx.Response) -> FileMeta:
    length = response.headers.get("content-length")
    total = response.headers.get("content-range", "").rpartition("/")[2]
    size = int(total) if total.isdigit() else int(length) if length and length.isdigit() else None
    return FileMeta(etag=response.headers.get("etag", ""), last_modified=response.headers.get("last-modified", ""),
                    size=size)


class OnsClient:
    """One client per process; ``async with OnsClient(...) as c`` or :meth:`aclose`."""

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, file_hosts: Iterable[str] = (), timeout_s: float = 60.0,
                 attempts: int = 5, backoff_s: float = 1.0, backoff_max_s: float = 30.0,
                 http: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.hosts = {urllib.parse.urlsplit(self.base_url).hostname or ""} | {h.strip().lower() for h in file_hosts
                                                                                if h.strip()}
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.requests = 0
        self.retries = 0
        self.resumed = 0
        self._own = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), headers={
            "User-Agent": "cds-backend (dados abertos ONS)"})

    async def __aenter__(self) -> OnsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    async def _retrying(self, what: str, once: Any) -> Any:
        retrying = AsyncRetrying(retry=retry_if_exception_type(_Transient),
                                 wait=wait_exponential(multiplier=self.backoff_s, max=self.backoff_max_s),
                                 stop=stop_after_attempt(self.attempts), before_sleep=self._before_sleep)
        try:
            async for attempt in retrying:
                with attempt:
                    return await once()
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            raise OnsUnavailable(f"ONS indisponível após {self.attempts} tentativas ({what}): {cause}",
                                 attempts=self.attempts) from cause
        raise AssertionError("unreachable")  # pragma: no cover

    def _before_sleep(self, state: Any) -> None:
        self.retries += 1
        log.warning("ons retry", extra={"attempt": state.attempt_number,
                                         "error": str(state.outcome.exception()) if state.outcome else ""})

    # --- CKAN ---------------------------------------------------------------------------------------------------

    async def call(self, action: str, params: Mapping[str, Any]) -> Any:
        """One CKAN action with retries; returns ``result``."""
        url = f"{self.base_url}/api/3/action/{action}"

        async def once() -> Any:
            self.requests += 1
            try:
                resp = await self._http.get(url, params=dict(params))
            except httpx.TransportError as exc:
                raise _Transient(f"{type(exc).__name__}: {exc}") from exc
            try:
                body = resp.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise _Transient(f"HTTP {resp.status_code} sem JSON ({resp.text[:60]!r})") from exc
            if resp.status_code >= 500:
                raise _Transient(f"HTTP {resp.status_code}")
            if 400 <= resp.status_code < 500:
                error = body.get("error", {}) if isinstance(body, dict) else {}
                error = error if isinstance(error, dict) else {"message": str(error)}
                detail = error.get("message") or "; ".join(f"{k}: {v}" for k, v in error.items() if k != "__type")
                cls = OnsNotFound if resp.status_code == 404 else OnsRequestError
                raise cls(resp.status_code, str(error.get("__type", "")), str(detail or body), url=url)
            if not isinstance(body, dict) or body.get("success") is not True or "result" not in body:
                raise _Transient(f"resposta CKAN inesperada: {str(body)[:80]}")
            return body["result"]

        return await self._retrying(action, once)

    async def package_show(self, slug: str) -> dict[str, Any]:
        result = await self.call("package_show", {"id": slug})
        if not isinstance(result, dict):
            raise OnsRequestError(200, "", "package_show sem objeto", url=self.base_url)
        return result

    async def find_package(self, slug: str) -> dict[str, Any]:
        """``package_show(slug)``; when the slug is unknown, its successor (``<slug>-N``) found through
        ``package_search``, paged ``SEARCH_PAGE`` at a time."""
        try:
            return await self.package_show(slug)
        except OnsNotFound:
            pass
        start, best = 0, None
        while True:
            page = await self.call("package_search", {"q": slug, "rows": SEARCH_PAGE, "start": start})
            results = page.get("results") or [] if isinstance(page, dict) else []
            for pkg in results:
                name = str(pkg.get("name", "")) if isinstance(pkg, dict) else ""
                if re.fullmatch(re.escape(slug) + r"-\d+", name) and (best is None or name > best["name"]):
                    best = pkg
            start += len(results)
            if not results or start >= int(page.get("count") or 0):
                break
        if best is None:
            raise OnsNotFound(404, "Not Found Error", f"conjunto {slug!r} não encontrado", url=self.base_url)
        log.warning("ons package renamed", extra={"slug": slug, "now": best["name"]})
        return await self.package_show(str(best["name"]))

    # --- S3 files -------------------------------------------------------------------------------------------------

    def _check_host(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or (parts.hostname or "").lower() not in self.hosts:
            raise OnsRequestError(0, "UrlRefused", "arquivo fora dos hosts permitidos (BACKEND_ONS_FILE_HOSTS)",
                                  url=url)

    def _file_error(self, resp: httpx.Response, url: str, body: bytes = b"") -> Exception:
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            return _Transient(f"HTTP {resp.status_code} em {url}")
        code, message = _s3_error(body) if body else ("", resp.reason_phrase)
        cls = OnsNotFound if resp.status_code == 404 else OnsRequestError
        return cls(resp.status_code, code or ("NoSuchKey" if resp.status_code == 404 else ""), message, url=url)

    async def head(self, url: str) -> FileMeta:
        """``HEAD`` a file: ETag, Last-Modified, size."""
        self._check_host(url)

        async def once() -> FileMeta:
            self.requests += 1
            try:
                resp = await self._http.head(url)
            except httpx.TransportError as exc:
                raise _Transient(f"{type(exc).__name__}: {exc}") from exc
            if resp.status_code != 200:
                raise self._file_error(resp, url)
            return _meta(resp)

        result: FileMeta = await self._retrying("HEAD", once)
        return result

    async def download(self, url: str) -> tuple[bytes, FileMeta]:
        """The whole file and its metadata; a dropped transfer resumes where it stopped when S3 allows it."""
        self._check_host(url)
        got = bytearray()
        meta = FileMeta()

        async def once() -> tuple[bytes, FileMeta]:
            nonlocal meta
            self.requests += 1
            headers = {}
            if got and meta.etag:
                headers = {"Range": f"bytes={len(got)}-", "If-Range": meta.etag}
            try:
                async with self._http.stream("GET", url, headers=headers) as resp:
                    if resp.status_code not in (200, 206):
                        raise self._file_error(resp, url, await resp.aread())
                    if resp.status_code == 200:
                        got.clear()
                    else:
                        self.resumed += 1
                    meta = _meta(resp)
                    async for chunk in resp.aiter_bytes():
                        got.extend(chunk)
            except httpx.TransportError as exc:
                raise _Transient(f"{type(exc).__name__} após {len(got)} bytes: {exc}") from exc
            if meta.size is not None and len(got) != meta.size:
                raise _Transient(f"{len(got)} de {meta.size} bytes recebidos")
            return bytes(got), meta

        result: tuple[bytes, FileMeta] = await self._retrying("GET", once)
        return result
