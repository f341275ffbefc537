"""AICSS meter endpoints: HTTP ingest for meters without a gateway, status, and CONFIG downlinks.

Ingest and configuration need the operator role on the site concerned; status shows the caller's sites only
(backend/api/access.py)."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from typing import Annotated, Any, Final

import msgspec
from litestar import Controller, Request, Response, get, post, put
from litestar.di import NamedDependency
from litestar.exceptions import TooManyRequestsException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromQuery, JSONBody

from backend.api.access import device_site, hidden_device, require_operator, require_site, sees_device
from backend.api.auth import caller_of, requires_role
from backend.api.devices import check_device
from backend.api.openapi import ErrorOut, errors, raw_body
from backend.api.state import Services, book_of, device_book
from backend.errors import (
    ApiError,
    BadRequestError,
    InfluxRejectedError,
    MqttUnavailableError,
    NotFoundError,
    UnavailableError,
)
from backend.ingest.fleet import DeviceOut, device_statuses
from backend.ingest.validation import Reason, Rejection, convert_batch, decode_batch
from backend.store.influx import InfluxClient
from backend.store.readings import oldest_storable_ms
from protocol import ids, mqtt
from protocol.mqtt import ConfigRequest

REASON_PT: Final[dict[Reason, str]] = {
    "oversize": "Lote grande demais.",
    "invalid_json": "Lote não é JSON válido em UTF-8.",
    "schema": "Lote fora do formato ReadingBatch.",
    "bad_topic": "Lote com identificadores inválidos.",
    "topic_mismatch": "Lote de outro site ou gateway.",
    "future_timestamp": "Lote com horário de medição muito à frente do relógio do servidor.",
    "unrepresentable": "Lote com valor não representável.",
    "influx_rejected": "Lote recusado pelo banco de dados de medições.",
    "beyond_retention": "Lote com medição mais antiga que a retenção dos dados brutos.",
    "internal_error": "Lote não processado por um erro interno.",
    "not_owner": "Medidor provisionado a outro site ou gateway.",
    "device_disabled": "Medidor desativado pelo administrador.",
    "gateway_disabled": "Gateway desativado pelo administrador.",
    "site_disabled": "Site desativado pelo administrador.",
    "unprovisioned": "Medidor não provisionado (o cadastro automático está desligado).",
    "device_limit": "Limite de medidores do gateway atingido.",
    "rate_limited": "Envios demais: tente de novo em instantes.",
}


class RejectedOut(msgspec.Struct):
    device: str
    boot: int
    seq: int
    reason: str
    error: str


class DadosOut(msgspec.Struct):
    accepted: int
    rejected: list[RejectedOut]


class StatusOut(msgspec.Struct):
    devices: int
    devices_online: int
    gateways: int
    gateways_online: int
    mqtt_connected: bool | None
    unacked_messages: int | None
    readings_ingested: int | None
    items: list[DeviceOut]


class ConfigIn(msgspec.Struct, frozen=True):
    """A CONFIG for one meter; omitted fields keep the meter's current value."""

    device: Annotated[str, msgspec.Meta(pattern=ids.DEVICE_ID_PATTERN)]
    report_period_ms: Annotated[int, msgspec.Meta(ge=250, le=3_600_000)] | None = None
    v_gain: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None
    i_gain: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None
    phase_cdeg: Annotated[int, msgspec.Meta(ge=-1000, le=1000)] | None = None
    site: Annotated[str, msgspec.Meta(pattern=ids.ID_PATTERN)] | None = None
    gateway: Annotated[str, msgspec.Meta(pattern=ids.ID_PATTERN)] | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] | None = None


class ConfigOut(msgspec.Struct):
    device: str
    request_id: int
    status: str
    """``applied``, ``rejected``, ``storage_error``, ``undeliverable``, ``timeout`` (the meter's answer) or
    ``pending`` (no answer within the wait; the request stays queued for the gateway)."""
    detail: str = ""
    result: mqtt.ConfigResult | None = None


class AicssController(Controller):
    path = "/api/v1/aicss"
    tags = ["aicss"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @post("/dados", guards=[requires_role("operator")], status_code=200, opt=raw_body(mqtt.ReadingBatch),
          responses={**errors(404, 429), 422: ResponseSpec(
              DadosOut | ErrorOut, generate_examples=False,
              description="Nenhuma medição do lote foi gravada: as recusas, uma a uma (DadosOut), ou o motivo.")})
    async def dados(self, request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Response[DadosOut]:
        """Medições enviadas por HTTP, para medidores sem gateway: o mesmo ReadingBatch do MQTT.

        As mesmas verificações e a mesma idempotência do MQTT: o mesmo lote enviado duas vezes é gravado uma vez.
        200 com as contagens quando ao menos uma medição foi gravada (as recusadas listadas); 400 ou 413 quando o
        lote é inutilizável; 422 quando nenhuma medição foi aceita.
        """
        s = services.settings
        body = await request.body()
        try:
            batch = decode_batch(body, max_bytes=s.ingest_max_payload_bytes)
        except Rejection as rej:
            services.metrics.rejected.labels(rej.reason).inc()
            status = 413 if rej.reason == "oversize" else 400
            raise BadRequestError(f"{REASON_PT[rej.reason]} ({rej.error[:300]})",
                                  status_code=status) from rej
        caller = await caller_of(request)
        require_operator(caller, batch.site)
        devices = {r.device for r in batch.readings}
        if not caller.sees_all:
            # A tenant posts readings of its own site's meters only: a meter known to belong elsewhere is hidden.
            for dev in sorted(devices):
                if device_site(services, dev) not in ("", batch.site):
                    raise hidden_device(dev)
        budget = services.http_ingest_budget
        if budget is not None and not budget.take(caller.username, time.monotonic()):
            services.metrics.rejected.labels("rate_limited").inc()
            wait = max(1, math.ceil(budget.retry_after(caller.username, time.monotonic())))
            raise TooManyRequestsException(f"Envios demais deste usuário: tente de novo em {wait} s.",
                                           headers={"Retry-After": str(wait)})
        refused = await device_book(request).resolve(batch.site, batch.gateway, devices, wait=False)
        now_ms = int(time.time() * 1000)
        parsed = convert_batch(batch, now_ms=now_ms, max_future_ms=s.ingest_max_future_s * 1000,
                               min_ts_ms=oldest_storable_ms(s, now_ms), refused=refused)
        for r in parsed.rejected:
            services.metrics.rejected.labels(r.reason).inc()
            services.registry.note_refused(batch.site, batch.gateway, r.reason)
        if parsed.lines:
            if services.store is None:
                raise UnavailableError("Banco de dados de medições ainda não conectado; tente novamente.")
            try:
                await services.store.write(parsed.lines, parsed.spans)
            except InfluxRejectedError as exc:
                # Retrying cannot help (a field type conflict, a point InfluxDB will not keep): say so, not 503.
                services.metrics.rejected.labels("influx_rejected").inc()
                raise BadRequestError(f"{REASON_PT['influx_rejected']} ({exc.body[:300]})", status_code=422) from exc
            services.metrics.readings_written.labels("http").inc(len(parsed.lines))
            services.metrics.count_site_readings(parsed.site, len(parsed.lines))
            services.registry.note_readings({d: hi for d, (_, hi) in parsed.spans.items()})
        out = DadosOut(accepted=parsed.accepted, rejected=[
            RejectedOut(r.reading.device, r.reading.boot, r.reading.seq, r.reason, r.error) for r in parsed.rejected])
        return Response(out, status_code=200 if parsed.lines else 422)

    @get("/status")
    async def status(self, request: Request[Any, Any, Any], services: NamedDependency[Services],
                     influx: NamedDependency[InfluxClient], device: FromQuery[str | None] = None) -> StatusOut:
        """Estado dos medidores do usuário (de um só, com ``device``) e da ingestão nesta réplica."""
        if device is not None:
            check_device(device)
        caller = await caller_of(request)
        statuses = await device_statuses(influx, services.settings, services.registry, book_of(services), device)
        items = [d for d in statuses if sees_device(caller, services, d.device, d.site)]
        if device is not None and not items:
            raise hidden_device(device)
        ingest = services.ingest
        gws = [g for (site, _), g in services.registry.gateways.items() if caller.can_see(site)]
        return StatusOut(devices=len(items), devices_online=sum(d.online for d in items),
                         gateways=len(gws), gateways_online=sum(g.status.online for g in gws),
                         mqtt_connected=ingest.bridge.connected if ingest else None,
                         unacked_messages=ingest.unacked if ingest else None,
                         readings_ingested=ingest.written_readings if ingest else None, items=items)

    @put("/config", guards=[requires_role("operator")], responses=errors(404, 409))
    async def config(self, request: Request[Any, Any, Any], data: JSONBody[ConfigIn],
                     services: NamedDependency[Services]) -> ConfigOut:
        """Envia uma configuração (CONFIG) a um medidor pelo seu gateway e espera, por um tempo limitado, a resposta.

        O resultado do medidor (``applied``, ``rejected``...) ou ``pending`` quando ele não respondeu a tempo; 404
        para um medidor desconhecido ou não provisionado, 409 quando ``site``/``gateway`` não são os do medidor.
        """
        check_device(data.device)
        fields = (data.report_period_ms, data.v_gain, data.i_gain, data.phase_cdeg)
        if all(f is None for f in fields):
            raise BadRequestError("Nada a configurar: informe report_period_ms, v_gain, i_gain ou phase_cdeg.")
        caller = await caller_of(request)
        if not sees_device(caller, services, data.device):
            raise hidden_device(data.device)
        # Only to the gateway the device book says owns the meter: a gateway announcing another's meter (a
        # retained DeviceInfo under its own prefix) never receives its CONFIG.
        owner = book_of(services).owner(data.device)
        if owner is None:
            raise NotFoundError(f"Medidor {data.device} não provisionado: provisione-o em /api/v1/admin/medidores.")
        require_operator(caller, owner.site)
        if data.site is not None:
            require_site(caller, data.site)  # a site the caller may not see: the same 404 as a missing one
        if (data.site, data.gateway) not in ((None, None), (owner.site, owner.gateway)):
            raise ApiError(f"O medidor {data.device} pertence a {owner.site}/{owner.gateway}, não a "
                           f"{data.site}/{data.gateway}.", status_code=409)
        ingest = services.ingest
        if ingest is None or not ingest.bridge.connected:
            raise UnavailableError("Sem conexão com o broker MQTT; tente novamente.")
        request_id = secrets.randbelow(0xFFFF) + 1
        while services.registry.is_open(data.device, request_id):
            request_id = secrets.randbelow(0xFFFF) + 1
        req = ConfigRequest(request_id=request_id, report_period_ms=data.report_period_ms, v_gain=data.v_gain,
                            i_gain=data.i_gain, phase_cdeg=data.phase_cdeg)
        timeout = data.timeout_s or services.settings.config_timeout_s
        # Opened before the CONFIG leaves, so the answer cannot arrive before anyone waits for it.
        with services.registry.config_request(data.device, request_id, owner.site, owner.gateway) as answer:
            try:
                await ingest.bridge.publish(mqtt.config_topic(owner.site, owner.gateway, data.device),
                                            mqtt.json_encoder.encode(req), qos=1, timeout=5.0)
            except MqttUnavailableError as exc:
                raise UnavailableError("O broker MQTT não confirmou o envio; tente novamente.") from exc
            try:
                async with asyncio.timeout(timeout):
                    result = await answer
            except TimeoutError:
                return ConfigOut(device=data.device, request_id=request_id, status="pending",
                                 detail=f"Sem resposta do medidor em {timeout:g} s; o pedido segue na fila do "
                                        "gateway.")
        return ConfigOut(device=data.device, request_id=request_id, status=result.status, detail=result.detail,
                         result=result)
