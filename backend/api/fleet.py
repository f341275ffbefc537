"""``/api/v1/admin/{sites,gateways,medidores}`` (admin only): the device book as an administrator manages it.

A thin pt-BR layer over :class:`backend.ingest.devicebook.DeviceBook`: provision, move, disable and enable meters;
register gateways (with their own meter limit) and sites, disable and enable them. Each change is written with
its audit entry; the lists also show what only this replica saw (gateways reporting without a registration,
refusals counted here since it started), because that is what an administrator needs to decide.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.params import FromPath, JSONBody

from backend.api.access import actor_of
from backend.api.auth import requires_role
from backend.api.devices import check_device
from backend.api.state import device_book, services_of
from backend.errors import BadRequestError
from backend.ingest.provisioning import DeviceRecord, GatewayRecord, SiteRecord
from protocol import ids

ADMIN = [requires_role("admin")]


class MedidorIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    site: Annotated[str, msgspec.Meta(pattern=ids.ID_PATTERN)]
    gateway: Annotated[str, msgspec.Meta(pattern=ids.ID_PATTERN)]


class MedidorOut(msgspec.Struct, frozen=True):
    medidor: str
    site: str
    gateway: str
    origem: str
    """``admin`` (provisioned here), ``auto`` (claimed at first sight) or ``sites_file`` (listed in the sites
    file, claimed by the first gateway of its site)."""
    desativado: bool
    alterado_em_ms: int | None


class GatewayIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    limite_medidores: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    """Meters the gateway may own; 0 = the server's default (BACKEND_PROVISIONING_MAX_DEVICES_PER_GATEWAY)."""
    desativado: bool = False


class GatewayAdminOut(msgspec.Struct, frozen=True):
    site: str
    gateway: str
    registrado: bool
    """Registered by an administrator (else only seen: its retained status or its meters)."""
    desativado: bool
    limite_medidores: int
    """The limit in force (the gateway's own, or the server's default)."""
    medidores: int
    online: bool | None
    """From its retained status (None: no status seen by this replica)."""
    recusas: dict[str, int]
    """Messages or readings of this gateway refused by this replica since it started, by reason."""
    alterado_em_ms: int | None


class SiteIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    nome: Annotated[str, msgspec.Meta(max_length=200)] = ""
    desativado: bool = False


class SiteAdminOut(msgspec.Struct, frozen=True):
    site: str
    nome: str
    registrado: bool
    desativado: bool
    no_arquivo_de_sites: bool
    """Configured for pricing in the sites file (BACKEND_SITES_FILE)."""
    medidores: int


def _medidor(r: DeviceRecord) -> MedidorOut:
    return MedidorOut(medidor=r.device, site=r.site, gateway=r.gateway, origem=r.origin, desativado=r.disabled,
                      alterado_em_ms=r.changed_ms or None)


def _check_ids(*values: str) -> None:
    if not all(ids.is_ident(v) for v in values):
        raise BadRequestError("Identificador de site ou gateway inválido: use letras minúsculas, dígitos, '_' ou '-'.")


class FleetAdminController(Controller):
    path = "/api/v1/admin"
    tags = ["administração"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/medidores", guards=ADMIN)
    async def medidores(self, request: Request[Any, Any, Any]) -> list[MedidorOut]:
        """Medidores provisionados (pelo administrador, automaticamente ou pelo arquivo de sites), com dono e
        situação."""
        book = device_book(request).book
        return [_medidor(book.devices[d]) for d in sorted(book.devices)]

    @put("/medidores/{medidor:str}", guards=ADMIN)
    async def provisionar(self, request: Request[Any, Any, Any], medidor: FromPath[str],
                          data: JSONBody[MedidorIn]) -> MedidorOut:
        """Provisiona o medidor ao site e gateway dados (ou o transfere): dali em diante só esse gateway pode
        enviar suas medições e receber sua configuração."""
        check_device(medidor)
        record = await device_book(request).provision(medidor, data.site, data.gateway,
                                                      actor=await actor_of(request))
        return _medidor(record)

    @post("/medidores/{medidor:str}/desativar", guards=ADMIN, status_code=200)
    async def desativar_medidor(self, request: Request[Any, Any, Any], medidor: FromPath[str]) -> MedidorOut:
        """Desativa o medidor: suas medições são recusadas venham de onde vierem; o histórico fica."""
        check_device(medidor)
        return _medidor(await device_book(request).set_device_disabled(medidor, True, actor=await actor_of(request)))

    @post("/medidores/{medidor:str}/ativar", guards=ADMIN, status_code=200)
    async def ativar_medidor(self, request: Request[Any, Any, Any], medidor: FromPath[str]) -> MedidorOut:
        """Reativa um medidor desativado, com o mesmo site e gateway."""
        check_device(medidor)
        return _medidor(await device_book(request).set_device_disabled(medidor, False,
                                                                       actor=await actor_of(request)))

    @get("/gateways", guards=ADMIN)
    async def gateways(self, request: Request[Any, Any, Any]) -> list[GatewayAdminOut]:
        """Gateways registrados ou vistos por esta réplica, com limite e número de medidores, situação e recusas."""
        devices = device_book(request)
        book, registry = devices.book, services_of(request).registry
        default = devices.settings.provisioning_max_devices_per_gateway
        keys = (set(book.gateways) | set(registry.gateways) | set(registry.refused)
                | {(r.site, r.gateway) for r in book.devices.values()})
        out = []
        for site, gw in sorted(keys):
            record: GatewayRecord | None = book.gateways.get((site, gw))
            status = registry.gateways.get((site, gw))
            out.append(GatewayAdminOut(
                site=site, gateway=gw, registrado=record is not None, desativado=bool(record and record.disabled),
                limite_medidores=book.device_limit(site, gw, default), medidores=book.owned_by(site, gw),
                online=status.status.online if status is not None else None,
                recusas=dict(sorted(registry.refused.get((site, gw), {}).items())),
                alterado_em_ms=record.changed_ms or None if record is not None else None))
        return out

    @put("/gateways/{site:str}/{gateway:str}", guards=ADMIN)
    async def gateway(self, request: Request[Any, Any, Any], site: FromPath[str], gateway: FromPath[str],
                      data: JSONBody[GatewayIn]) -> GatewayAdminOut:
        """Registra o gateway, muda seu limite de medidores, ou o desativa ('desativado': true: tudo o que ele
        enviar é recusado) e reativa."""
        _check_ids(site, gateway)
        devices = device_book(request)
        record = await devices.put_gateway(site, gateway, max_devices=data.limite_medidores,
                                           disabled=data.desativado, actor=await actor_of(request))
        registry = services_of(request).registry
        status = registry.gateways.get((site, gateway))
        return GatewayAdminOut(
            site=site, gateway=gateway, registrado=True, desativado=record.disabled,
            limite_medidores=devices.book.device_limit(site, gateway,
                                                       devices.settings.provisioning_max_devices_per_gateway),
            medidores=devices.book.owned_by(site, gateway),
            online=status.status.online if status is not None else None,
            recusas=dict(sorted(registry.refused.get((site, gateway), {}).items())),
            alterado_em_ms=record.changed_ms)

    @get("/sites", guards=ADMIN)
    async def sites(self, request: Request[Any, Any, Any]) -> list[SiteAdminOut]:
        """Sites registrados, configurados no arquivo de sites ou com medidores provisionados."""
        book = device_book(request).book
        analytics = services_of(request).analytics
        configured = set(analytics.sites) if analytics is not None else set()
        counts: dict[str, int] = {}
        for r in book.devices.values():
            counts[r.site] = counts.get(r.site, 0) + (not r.disabled)
        out = []
        for site in sorted(set(book.sites) | configured | set(counts)):
            record: SiteRecord | None = book.sites.get(site)
            out.append(SiteAdminOut(site=site, nome=record.name if record else "", registrado=record is not None,
                                    desativado=bool(record and record.disabled), no_arquivo_de_sites=site in configured,
                                    medidores=counts.get(site, 0)))
        return out

    @put("/sites/{site:str}", guards=ADMIN)
    async def site(self, request: Request[Any, Any, Any], site: FromPath[str], data: JSONBody[SiteIn]) -> SiteAdminOut:
        """Registra o site (com um nome), ou o desativa ('desativado': true: tudo o que seus gateways enviarem é
        recusado) e reativa. Tarifa e impostos do site ficam no arquivo de sites."""
        _check_ids(site)
        devices = device_book(request)
        record = await devices.put_site(site, name=data.nome, disabled=data.desativado, actor=await actor_of(request))
        analytics = services_of(request).analytics
        return SiteAdminOut(site=site, nome=record.name, registrado=True, desativado=record.disabled,
                            no_arquivo_de_sites=analytics is not None and site in analytics.sites,
                            medidores=sum(r.site == site and not r.disabled for r in devices.book.devices.values()))
