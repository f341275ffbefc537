"""``/api/v1/aneel/...``: the tariffs and bandeiras the backend holds, their age, and a manual pull (admin)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromQuery, QueryParameter

from backend.aneel.records import TariffRecord
from backend.aneel.store import SyncReport, SyncStatus
from backend.aneel.tariffs import TariffError, merge_periods
from backend.api.access import audited
from backend.api.auth import requires_role
from backend.api.openapi import errors, local_day
from backend.api.state import analytics_service
from backend.errors import BadRequestError, InfluxError, NotFoundError, UnavailableError


class DataAge(msgspec.Struct):
    sync: SyncStatus | None
    in_memory_records: int
    reload_error: str = ""
    stale: bool = False
    """True when the last successful pull is older than twice the pull interval (ANEEL or the job is down)."""


class TariffOut(msgspec.Struct):
    reh: str
    distribuidora: str
    cnpj: str
    inicio_vigencia: dt.date
    fim_vigencia: dt.date
    subgrupo: str
    modalidade: str
    classe: str
    subclasse: str
    detalhe: str
    posto: str
    tusd: Decimal
    tusd_unidade: str
    te_rs_mwh: Decimal
    rs_kwh: Decimal | None
    """(TUSD + TE)/1000 for energy rows, without taxes or bandeira."""
    vigente: bool = False
    vencida_sem_sucessora: bool = False


class TariffsOut(msgspec.Struct):
    data: dt.date
    tarifas: list[TariffOut]
    periodos: list[dict[str, Any]]
    idade_dos_dados: DataAge


class FlagsOut(msgspec.Struct):
    meses: list[dict[str, Any]]
    adicionais: list[dict[str, Any]]
    atual: dict[str, Any] | None
    idade_dos_dados: DataAge


def _out(r: TariffRecord, *, in_force: bool = False, expired: bool = False) -> TariffOut:
    return TariffOut(reh=r.reh, distribuidora=r.distributor, cnpj=r.cnpj, inicio_vigencia=r.start,
                     fim_vigencia=r.end, subgrupo=r.subgroup, modalidade=r.modality, classe=r.klass,
                     subclasse=r.subclass, detalhe=r.detail, posto=r.posto, tusd=r.tusd, tusd_unidade=r.tusd_unit,
                     te_rs_mwh=r.te_rs_mwh, rs_kwh=r.energy_rs_kwh if r.tusd_unit == "R$/MWh" else None,
                     vigente=in_force, vencida_sem_sucessora=expired)


async def _age(request: Request[Any, Any, Any]) -> DataAge:
    svc = analytics_service(request)
    await svc.data.load()
    try:
        st: SyncStatus | None = await svc.store.status()
    except InfluxError:
        st = None
    stale = st is None or st.age_s is None or st.age_s > 2 * svc.settings.aneel_sync_interval_s
    return DataAge(sync=st, in_memory_records=len(svc.data.tariffs.records), reload_error=svc.data.load_error,
                   stale=stale)


class AneelController(Controller):
    path = "/api/v1/aneel"
    tags = ["ANEEL"]  # noqa: RUF012 (Litestar declares it as an instance attribute)

    @get("/tarifas", responses=errors(404))
    async def tarifas(self, request: Request[Any, Any, Any],
                      distribuidora: Annotated[str, QueryParameter(description="Sigla ou CNPJ da distribuidora.")],
                      subgrupo: FromQuery[str] = "B1", modalidade: FromQuery[str | None] = None,
                      subclasse: FromQuery[str] = "Residencial",
                      data_ref: Annotated[str | None, local_day("Dia de referência (AAAA-MM-DD); padrão: hoje.",
                                                                name="data")] = None) -> TariffsOut:
        """Tarifas homologadas (TUSD e TE) de uma distribuidora (sigla ou CNPJ), com a vigente na data.

        404 para uma distribuidora que a ANEEL não lista; 503 antes da primeira sincronização com a ANEEL.
        """
        svc = analytics_service(request)
        age = await _age(request)
        try:
            day = dt.date.fromisoformat(data_ref) if data_ref else dt.date.today()
        except ValueError as exc:
            raise BadRequestError("'data' deve estar no formato AAAA-MM-DD.") from exc
        book = svc.data.tariffs
        if not book.records:
            raise UnavailableError("Tarifas ainda não sincronizadas com a ANEEL.")
        try:
            cnpj = book.resolve_cnpj(distribuidora)
        except TariffError as exc:
            raise NotFoundError(str(exc)) from exc
        mods = [modalidade] if modalidade else sorted({r.modality for r in book.records if r.cnpj == cnpj})
        chosen: dict[tuple[str, ...], bool] = {}
        for mod in mods:
            try:
                for c in book.energy_tariffs(cnpj, day, subgroup=subgrupo, modality=mod, subclass=subclasse).values():
                    chosen[c.record.natural_key()] = c.expired
            except TariffError:
                continue
        rows = [r for r in book.records if r.cnpj == cnpj and r.subgroup == subgrupo and r.subclass == subclasse
                and (modalidade is None or r.modality == modalidade)]
        rows.sort(key=lambda r: (r.modality, r.posto, r.start))
        periods = []
        for mod in mods:
            for posto in sorted({r.posto for r in rows if r.modality == mod}):
                for p in merge_periods(r for r in rows if r.modality == mod and r.posto == posto
                                       and r.tusd_unit == "R$/MWh" and r.detail == "Não se aplica"):
                    periods.append({"modalidade": mod, "posto": posto, "inicio": p.start, "fim": p.end,
                                    "tusd": p.tusd, "te": p.te_rs_mwh, "reh": p.reh})
        return TariffsOut(data=day, tarifas=[_out(r, in_force=r.natural_key() in chosen,
                                                  expired=chosen.get(r.natural_key(), False)) for r in rows],
                          periodos=periods, idade_dos_dados=age)

    @get("/bandeiras")
    async def bandeiras(self, request: Request[Any, Any, Any],
                        desde: Annotated[str | None, local_day("Primeiro mês listado (AAAA-MM-DD).")] = None
                        ) -> FlagsOut:
        """Bandeira acionada por mês (R$/MWh) e os adicionais por resolução."""
        svc = analytics_service(request)
        age = await _age(request)
        try:
            since = dt.date.fromisoformat(desde) if desde else dt.date.min
        except ValueError as exc:
            raise BadRequestError("'desde' deve estar no formato AAAA-MM-DD.") from exc
        flags = svc.data.flags
        months = [{"mes": m.month, "bandeira": m.flag, "adicional_rs_mwh": m.adder_rs_mwh,
                   "adicional_rs_kwh": m.adder_rs_mwh / 1000} for m in flags.months if m.month >= since]
        adders = [{"resolucao": a.resolution, "inicio": a.start, "bandeira": a.flag, "adicional_rs_mwh": a.adder_rs_mwh}
                  for a in flags.adders]
        current = None
        try:
            f = flags.flag_for(dt.date.today())
            current = {"mes": f.month, "bandeira": f.flag, "adicional_rs_mwh": f.adder_rs_mwh, "fonte": f.source}
        except TariffError:
            pass
        return FlagsOut(meses=months, adicionais=adders, atual=current, idade_dos_dados=age)

    @post("/sync", guards=[requires_role("admin")], status_code=200)
    async def sync(self, request: Request[Any, Any, Any]) -> SyncReport:
        """Puxa agora as tarifas e bandeiras da ANEEL e informa o que mudou (somente admin)."""
        async with audited(request, "sincronizar_aneel"):
            svc = analytics_service(request)
            if svc.scheduler is None:
                raise UnavailableError("Sincronização indisponível.")
            return await svc.scheduler.run_once()
