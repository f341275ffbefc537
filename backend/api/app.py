"""The Litestar application: ``create_app()`` factory, lifespan-managed clients, route list.

Run it with ``python -m backend`` or any ASGI server: ``uvicorn --factory backend.api.app:create_app``.

Extending: add controllers to :data:`ROUTE_HANDLERS`; long-lived work gets a typed handle in
:class:`~backend.api.state.Services` and is started and stopped in :func:`_lifespan`. Handlers may declare these
parameters, injected by name: ``settings`` (:class:`~backend.settings.Settings`), ``influx``
(:class:`~backend.store.influx.InfluxClient`), ``services`` (:class:`~backend.api.state.Services`). Every route
requires a JWT (viewer or better) unless its handler sets ``opt={"public": True}``; add
``guards=[requires_role("operator")]`` for more.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request, Response
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ControllerRouterHandler
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from backend.accounts.audit import AuditLog
from backend.accounts.store import AccountStore
from backend.analytics.runtime import Publish, open_analytics
from backend.api.admin import AdminController
from backend.api.aicss import AicssController
from backend.api.analytics import AnalyticsController
from backend.api.aneel import AneelController
from backend.api.auth import Authenticator, authenticated, issue_token
from backend.api.consultas import consulta_influxql
from backend.api.dashboard import SWAGGER_UI_URL, dashboard_router, plotly_router, swagger_ui_router
from backend.api.devices import DevicesController
from backend.api.exportacao import ExportController
from backend.api.fleet import FleetAdminController
from backend.api.health import health, metrics, ready
from backend.api.knowledge import conhecimento
from backend.api.names import NamesController
from backend.api.notificacoes import NotificationsController
from backend.api.ons import OnsController
from backend.api.openapi import ErrorOut, ValidationIssue, document
from backend.api.painel import PainelController
from backend.api.questions import QuestionsController
from backend.api.readings import ReadingsController
from backend.api.state import Services, influx_of, services_of, settings_of
from backend.errors import ApiError, BackendError, InfluxRejectedError, InfluxUnavailableError
from backend.ingest.devicebook import DeviceBook, declared_devices
from backend.ingest.limits import Budget
from backend.ingest.registry import Registry
from backend.ingest.service import IngestService
from backend.logs import configure_logging
from backend.metrics import Metrics
from backend.ons.runtime import open_ons
from backend.settings import Settings, get_settings
from backend.store.influx import InfluxClient
from backend.store.layout import ensure_schema
from backend.store.readings import ReadingStore
from backend.store.rollups import RollupWorker

log = logging.getLogger(__name__)

ROUTE_HANDLERS: list[ControllerRouterHandler] = [
    health,
    ready,
    metrics,
    issue_token,
    DevicesController,
    ReadingsController,
    ExportController,
    AicssController,
    AnalyticsController,
    AneelController,
    OnsController,
    conhecimento,
    consulta_influxql,
    QuestionsController,
    AdminController,
    FleetAdminController,
    PainelController,
    NamesController,
    NotificationsController,
    dashboard_router,
    plotly_router,
    swagger_ui_router,
]


@asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    """InfluxDB client + schema, accounts, device book, MQTT ingest, rollup worker, analytics; stopped in reverse
    order."""
    services: Services = app.state.services
    s = services.settings
    async with InfluxClient(s.influx_url, username=s.influx_username, password=s.influx_password,
                            token=s.influx_token, timeout=s.influx_timeout_s) as influx:
        services.influx = influx
        services.store = ReadingStore(influx, s)
        audit = AuditLog(influx, s)
        accounts = AccountStore(influx, s, audit)
        if s.influx_manage_schema:
            await _ensure_schema_retrying(influx, s, accounts)
        services.accounts = services.authenticator.accounts = accounts
        services.authenticator.audit = audit
        async with contextlib.AsyncExitStack() as stack:
            devices = services.devices = DeviceBook(influx, s, audit, declared_devices(s))
            await devices.start()
            stack.push_async_callback(devices.stop)
            publish: Publish | None = None
            if s.ingest_enabled:
                ingest = services.ingest = IngestService(s, services.store, services.registry, services.metrics,
                                                         devices)
                await ingest.start()
                stack.push_async_callback(ingest.stop)

                async def publish(topic: str, payload: bytes) -> None:
                    await ingest.bridge.publish(topic, payload, qos=1, retain=True)
            if s.rollup_enabled:
                services.rollups = RollupWorker(influx, s, services.metrics)
                await services.rollups.start()
                stack.push_async_callback(services.rollups.stop)
            services.ons = await stack.enter_async_context(open_ons(s, influx, services.metrics))
            # fila_gateway alerts judge the statuses ingest keeps; analytics may not import ingest, so a provider.
            registry = services.registry
            services.analytics = await stack.enter_async_context(open_analytics(
                s, influx, publish, services.metrics,
                lambda: {key: g.status for key, g in registry.gateways.items()}))
            log.info("backend started", extra={"client_id": s.resolved_client_id(), "ingest": s.ingest_enabled})
            try:
                yield
            finally:
                services.analytics = services.ons = None


async def _ensure_schema_retrying(influx: InfluxClient, settings: Settings, accounts: AccountStore) -> None:
    """The schema must exist before ingest; wait for InfluxDB (it may start after us, e.g. in compose)."""
    async for attempt in AsyncRetrying(retry=retry_if_exception_type(InfluxUnavailableError),
                                       wait=wait_exponential(multiplier=0.1, max=2), stop=stop_after_delay(120),
                                       reraise=True):
        with attempt:
            await ensure_schema(influx, settings)
            await accounts.ensure_schema()


def _answer(request: Request[Any, Any, Any], status: int, detail: str, *,
            extra: list[ValidationIssue] | None = None, headers: dict[str, str] | None = None) -> Response[ErrorOut]:
    """The one error shape of the API (``status_code``, pt-BR ``detail``; documented by backend/api/openapi.py),
    counted by status."""
    services_of(request).metrics.http_errors.labels(str(status)).inc()
    return Response(ErrorOut(status_code=status, detail=detail, extra=extra or None), status_code=status,
                    headers=headers)


def _api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[ErrorOut]:
    return _answer(request, exc.status_code, exc.detail)


def _influx_unavailable(request: Request[Any, Any, Any], exc: InfluxUnavailableError) -> Response[ErrorOut]:
    log.error("influx unavailable in request", extra={"path": request.url.path, "error": str(exc)[:500]})
    return _answer(request, 503, "Banco de dados de medições indisponível; tente novamente.")


def _backend_error(request: Request[Any, Any, Any], exc: BackendError) -> Response[ErrorOut]:
    if isinstance(exc, InfluxRejectedError):
        # Every value from a request is checked before it reaches InfluxDB, so a refused query or write is a bug
        # of ours: retrying will not help, and it must be seen with its traceback.
        return _internal_error(request, exc)
    log.error("backend error in request", extra={"path": request.url.path, "error": str(exc)[:500]})
    return _answer(request, 503, "Serviço temporariamente indisponível.")


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorOut]:
    """The last line: nothing internal reaches the caller, everything reaches the log and the metrics."""
    log.error("unhandled error in request", exc_info=exc, extra={"path": request.url.path,
                                                                   "method": request.method})
    return _answer(request, 500, "Erro interno do servidor.")


_DEFAULT_DETAIL_PT = {
    "Not Found": "Recurso não encontrado.",
    "Method Not Allowed": "Método não permitido.",
    "Internal Server Error": "Erro interno do servidor.",
    "Bad Request": "Requisição inválida.",
    "Unauthorized": "Autenticação necessária.",
    "Forbidden": "Acesso negado.",
    "Request Entity Too Large": "Requisição grande demais.",
}


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorOut]:
    detail = _DEFAULT_DETAIL_PT.get(exc.detail, exc.detail)
    extra = _issues(exc.extra)
    if exc.status_code == 400 and extra:
        detail = "Requisição inválida: verifique os parâmetros."
    if exc.status_code >= 500:
        log.error("http error in request", exc_info=exc, extra={"path": request.url.path})
    return _answer(request, exc.status_code, detail, extra=extra, headers=exc.headers)


def _issues(extra: object) -> list[ValidationIssue] | None:
    """What Litestar's validation refused, field by field; any other ``extra`` is internal and stays out."""
    try:
        return msgspec.convert(extra, list[ValidationIssue]) if isinstance(extra, list) else None
    except msgspec.ValidationError:
        return None


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the application. ``settings`` defaults to the environment (``BACKEND_*``)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    services = Services(settings=settings, metrics=Metrics(), registry=Registry(),
                        authenticator=Authenticator(settings),
                        http_ingest_budget=Budget(settings.ingest_gateway_messages_per_s,
                                                  settings.ingest_gateway_burst))
    if services.authenticator.secret_is_ephemeral:
        log.warning("BACKEND_JWT_SECRET is not set: tokens are signed with a random key of this process only")
    openapi = OpenAPIConfig(
        title="CDS — API do backend",
        version="1.0.0",
        description="Medições, dispositivos e configuração dos medidores AICSS. Autenticação: Bearer JWT "
                    "(POST /api/v1/auth/token). Erros: JSON {status_code, detail} com a mensagem em pt-BR.",
        path="/docs",
        use_handler_docstrings=True,
        # Swagger UI's assets from the swagger-ui-bundle package, served by us: /docs renders offline.
        render_plugins=[SwaggerRenderPlugin(
            js_url=f"{SWAGGER_UI_URL}/swagger-ui-bundle.js", css_url=f"{SWAGGER_UI_URL}/swagger-ui.css",
            standalone_preset_js_url=f"{SWAGGER_UI_URL}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{SWAGGER_UI_URL}/favicon-32x32.png'>")],
        components=Components(security_schemes={
            "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}),
        security=[{"BearerToken": []}],
    )
    app = Litestar(
        route_handlers=list(ROUTE_HANDLERS),
        guards=[authenticated],
        dependencies={"settings": Provide(settings_of, sync_to_thread=False),
                      "influx": Provide(influx_of, sync_to_thread=False),
                      "services": Provide(services_of, sync_to_thread=False)},
        lifespan=[_lifespan],
        openapi_config=openapi,
        exception_handlers={ApiError: _api_error, InfluxUnavailableError: _influx_unavailable,
                            BackendError: _backend_error, HTTPException: _http_error, Exception: _internal_error},
        debug=settings.debug,
        logging_config=None,  # backend.logs owns logging (JSON lines)
    )
    app.state.services = services
    app.state.authenticator = services.authenticator
    document(app)
    return app
