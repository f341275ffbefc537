"""Bill estimate for a low-voltage (group B) consumer, line by line, as a distributor prints it.

For a billing cycle of N days and the energy of each posto, every line is **quantity × unit price with taxes**,
the way Brazilian bills print "Quant. × Tarifa c/ tributos = Valor":

1. **Tariff**: each posto's kWh pro-rated by days when a new REH starts inside the cycle (``kWh × dias/N``, to
   the Wh), one line per component (TUSD, TE), posto and vigência, at ``R$/MWh / 1000 / fator``.
2. **Bandeira**: total kWh × (days of the cycle in that month)/N at ``adicional / 1000 / fator`` (REN
   1.000/2021 art. 307: "tarifa proporcional aos dias de vigência de cada bandeira").
3. **Custo de disponibilidade**: the shortfall up to the minimum at the conventional (TUSD + TE) with taxes.

``fator = (1 − ICMS) × (1 − PIS − COFINS)``: taxes "por dentro", PIS/COFINS on a base without ICMS (STF,
RE 574.706). Unit prices are printed with 8 decimals, every line is rounded to the cent (half up) and the total
is the sum of the printed lines; the tax lines say how much of that total is tax (ICMS on the total, PIS/COFINS
on the total less ICMS), so their base is the total a person reads. The period's kWh are the energy rounded once
to the Wh; split per posto by :func:`apportion`, so the postos add up to it and the same energy priced as
Convencional and as Branca (and in the reports) shows the same kWh.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

import msgspec

from backend.aneel.sites import AVAILABILITY_KWH, SiteConfig
from backend.aneel.tariffs import BandeiraBook, TariffBook, TariffChoice, TariffNotFound

CENT = Decimal("0.01")
WH = Decimal("0.001")
UNIT = Decimal("0.00000001")
"""Unit prices with taxes (R$/kWh) are printed with 8 decimals, as on the bills."""
ENERGY_KINDS = frozenset({"tusd", "te", "bandeira"})
"""The lines that price measured energy (what reports split over days); the availability charge is not one."""


def money(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def apportion(weights: Sequence[Decimal], total: Decimal, quantum: Decimal) -> list[Decimal]:
    """Split ``total`` (a multiple of ``quantum``) in proportion to non-negative ``weights``, each part a multiple
    of ``quantum``, the parts adding up to ``total`` exactly (largest remainder; ties to the earlier part).

    How a printed total is shared over printed parts without a part and the total disagreeing by a cent: every
    part is its exact share rounded down, and the quanta left go to the parts that lost most in rounding."""
    whole = sum(weights, Decimal(0))
    if not weights:
        return []
    if whole <= 0:
        weights, whole = [Decimal(1)] * len(weights), Decimal(len(weights))
    exact = [total * w / whole for w in weights]
    parts = [(x / quantum).to_integral_value(rounding=ROUND_FLOOR) * quantum for x in exact]
    left = int(((total - sum(parts, Decimal(0))) / quantum).to_integral_value(rounding=ROUND_HALF_UP))
    for i in sorted(range(len(parts)), key=lambda i: (-(exact[i] - parts[i]), i))[:left]:
        parts[i] += quantum
    return parts


def unit_price(tariff_rs_mwh: Decimal, factor: Decimal) -> Decimal:
    """R$/kWh with taxes "por dentro", printed with 8 decimals."""
    return (tariff_rs_mwh / 1000 / factor).quantize(UNIT, rounding=ROUND_HALF_UP)


def period_kwh(kwh_by_posto: Mapping[str, float | Decimal], postos: Sequence[str]) -> dict[str, Decimal]:
    """The energy of a period rounded once to the Wh and split over ``postos`` (the keys of ``kwh_by_posto``
    summed when ``postos`` is the single ``"Não se aplica"``), the parts adding up to the rounded total."""
    total = sum((Decimal(str(v)) for v in kwh_by_posto.values()), Decimal(0)).quantize(WH, rounding=ROUND_HALF_UP)
    if list(postos) == ["Não se aplica"]:
        return {"Não se aplica": total}
    parts = apportion([Decimal(str(kwh_by_posto.get(p, 0))) for p in postos], total, WH)
    return dict(zip(postos, parts, strict=True))


class BillLine(msgspec.Struct, frozen=True):
    """One printed line: ``amount = round(kwh × unit_price)``; ``kwh`` already pro-rated by ``days /
    cycle_days`` (to the Wh), ``unit_price`` = ``price_rs_mwh`` / 1000 with taxes (8 decimals)."""

    kind: str
    """``tusd`` | ``te`` | ``bandeira`` | ``disponibilidade``"""
    description: str
    posto: str
    kwh: Decimal
    price_rs_mwh: Decimal
    days: int
    cycle_days: int
    amount: Decimal
    reh: str = ""
    unit_price: Decimal = Decimal(0)
    """R$/kWh with taxes, as printed."""


class TaxLine(msgspec.Struct, frozen=True):
    name: str
    rate: Decimal
    base: Decimal
    amount: Decimal


class Bill(msgspec.Struct, frozen=True):
    site: str
    distributor: str
    cnpj: str
    subgroup: str
    modality: str
    start: dt.date
    end: dt.date
    days: int
    kwh: dict[str, Decimal]
    kwh_total: Decimal
    lines: list[BillLine]
    subtotal: Decimal
    """The total less the taxes it includes."""
    tax_factor: Decimal
    """(1 − ICMS) × (1 − PIS − COFINS)."""
    taxes: list[TaxLine]
    total: Decimal
    """Sum of the printed lines (taxes included in each)."""
    rehs: list[str]
    warnings: list[str]


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def _fmt(d: Decimal) -> str:
    return f"{d:f}".replace(".", ",")


def tariff_runs(
    tariffs: TariffBook,
    cnpj: str,
    days: Sequence[dt.date],
    site: SiteConfig,
    modality: str,
    postos: Sequence[str],
    *,
    detail: str | None = None,
    rehs: list[str],
    warnings: list[str],
) -> dict[str, list[tuple[TariffChoice, int]]]:
    """The rows in force over ``days`` per posto, folded into runs of days using the same row.

    A tariff readjustment inside the cycle splits it: each run of days is priced with its own row, the energy
    pro-rated by days as distributors do (they cannot know when in the cycle it was used). Every REH used is
    appended to ``rehs`` and every quirk (expired row, overlapping vigências) to ``warnings``, once.
    """
    per_day: list[dict[str, TariffChoice]] = [
        tariffs.energy_tariffs(cnpj, d, subgroup=site.subgroup, modality=modality, subclass=site.subclass,
                               klass=site.klass, detail=site.detail if detail is None else detail)
        for d in days
    ]
    out: dict[str, list[tuple[TariffChoice, int]]] = {}
    for posto in postos:
        runs: list[tuple[TariffChoice, int]] = []
        for choices in per_day:
            choice = choices.get(posto)
            if choice is None:
                raise TariffNotFound(f"sem tarifa do posto {posto} para {modality}")
            if runs and runs[-1][0].record == choice.record:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((choice, 1))
        for choice, _ in runs:
            rec = choice.record
            if rec.reh not in rehs:
                rehs.append(rec.reh)
            if choice.expired:
                msg = f"tarifa vencida em {rec.end.isoformat()} sem sucessora publicada ({rec.reh}): valor provisório"
                if msg not in warnings:
                    warnings.append(msg)
            if choice.candidates > 1:
                msg = f"vigências sobrepostas: usada a de início mais recente ({rec.start.isoformat()}, {rec.reh})"
                if msg not in warnings:
                    warnings.append(msg)
        out[posto] = runs
    return out


def estimate_bill(
    site: SiteConfig,
    start: dt.date,
    end: dt.date,
    kwh_by_posto: Mapping[str, float | Decimal],
    tariffs: TariffBook,
    flags: BandeiraBook,
    *,
    modality: str | None = None,
) -> Bill:
    """Price the energy of ``[start, end]`` (local dates, inclusive) for ``site``.

    ``kwh_by_posto`` keys are ANEEL posto names: ``"Não se aplica"`` (or anything, summed) for Convencional;
    ``"Ponta"``, ``"Intermediário"``, ``"Fora ponta"`` for Branca. ``modality`` overrides the site's, which is
    how the Tarifa Branca comparison prices one consumption both ways.
    """
    if end < start:
        raise ValueError("fim antes do início")
    mod = modality or site.modality
    cnpj = tariffs.resolve_cnpj(site.distributor)
    days = days_between(start, end)
    n = len(days)
    warnings: list[str] = []

    kwh = period_kwh(kwh_by_posto, ["Não se aplica"] if mod == "Convencional" else
                     ["Ponta", "Intermediário", "Fora ponta"])
    kwh_total = sum(kwh.values(), Decimal(0))
    factor = (1 - site.icms) * (1 - site.pis - site.cofins)

    lines: list[BillLine] = []

    def add(kind: str, description: str, posto: str, energy: Decimal, price: Decimal, ndays: int,
            reh: str) -> None:
        qty = (energy * ndays / n).quantize(WH, rounding=ROUND_HALF_UP)
        unit = unit_price(price, factor)
        lines.append(BillLine(kind=kind, description=description, posto=posto, kwh=qty, price_rs_mwh=price,
                              days=ndays, cycle_days=n, amount=money(qty * unit), reh=reh, unit_price=unit))

    rehs: list[str] = []
    runs_by_posto = tariff_runs(tariffs, cnpj, days, site, mod, list(kwh), rehs=rehs, warnings=warnings)
    for posto, energy in kwh.items():
        for choice, ndays in runs_by_posto[posto]:
            rec = choice.record
            label = "" if posto == "Não se aplica" else f" {posto}"
            for kind, price in (("tusd", rec.tusd), ("te", rec.te_rs_mwh)):
                add(kind, f"Consumo {kind.upper()}{label} ({ndays}/{n} dias)", posto, energy, price, ndays, rec.reh)

    # Custo de disponibilidade: the shortfall up to the minimum, priced at the conventional energy tariff.
    if site.phases and kwh_total < AVAILABILITY_KWH[site.phases]:
        conv = tariffs.energy_tariffs(cnpj, end, subgroup=site.subgroup, modality="Convencional",
                                      subclass=site.subclass, klass=site.klass, detail=site.detail)
        rec = next(iter(conv.values())).record
        add("disponibilidade", f"Custo de disponibilidade (mínimo {AVAILABILITY_KWH[site.phases]} kWh)",
            "Não se aplica", Decimal(AVAILABILITY_KWH[site.phases]) - kwh_total, rec.tusd + rec.te_rs_mwh, n,
            rec.reh)

    # Bandeira per month, pro-rated by the cycle's days in that month; applied to the measured energy.
    month_days: dict[dt.date, int] = {}
    for d in days:
        month_days[d.replace(day=1)] = month_days.get(d.replace(day=1), 0) + 1
    for month, ndays in month_days.items():
        flag = flags.flag_for(month)
        if flag.source == "estimada":
            warnings.append(
                f"bandeira de {month:%m/%Y} ainda não publicada: assumida {flag.flag} (último acionamento)"
            )
        add("bandeira", f"Bandeira {flag.flag} {month:%m/%Y} ({ndays}/{n} dias)", "", kwh_total,
            flag.adder_rs_mwh, ndays, flag.resolution)

    total = sum((ln.amount for ln in lines), Decimal(0))
    # The taxes are inside every line's unit price; their lines only say how much of the printed total they are,
    # on the base a person reads: ICMS on the total, PIS/COFINS on the total less the ICMS printed.
    icms = money(total * site.icms)
    pis = money((total - icms) * site.pis)
    cofins = money((total - icms) * site.cofins)
    taxes = [
        TaxLine(name="ICMS", rate=site.icms, base=total, amount=icms),
        TaxLine(name="PIS/PASEP", rate=site.pis, base=total - icms, amount=pis),
        TaxLine(name="COFINS", rate=site.cofins, base=total - icms, amount=cofins),
    ]
    return Bill(
        site=site.id, distributor=tariffs.current_name(cnpj), cnpj=cnpj, subgroup=site.subgroup, modality=mod,
        start=start, end=end, days=n, kwh=kwh, kwh_total=kwh_total, lines=lines, subtotal=total - icms - pis - cofins,
        tax_factor=factor, taxes=taxes, total=total, rehs=rehs, warnings=warnings,
    )


def energy_cost(bill: Bill) -> Decimal:
    """What the measured energy costs on ``bill``: its tariff and bandeira lines, without the availability charge
    (a minimum is not energy used; reports and "so far" figures share out this sum)."""
    return sum((ln.amount for ln in bill.lines if ln.kind in ENERGY_KINDS), Decimal(0))


def explain(bill: Bill) -> list[str]:
    """The bill as pt-BR text lines, each with the arithmetic that produced it."""
    out = [f"Conta estimada {bill.site} — {bill.modality} {bill.subgroup} — {bill.distributor} "
           f"({bill.start:%d/%m/%Y} a {bill.end:%d/%m/%Y}, {bill.days} dias)"]
    out.append(f"Tarifa com tributos = R$/MWh ÷ 1000 ÷ {_fmt(bill.tax_factor)} ((1 − ICMS) × (1 − PIS − COFINS))")
    for ln in bill.lines:
        out.append(f"{ln.description}: {_fmt(ln.kwh)} kWh × {_fmt(ln.unit_price)} "
                   f"({_fmt(ln.price_rs_mwh)} R$/MWh) = R$ {_fmt(ln.amount)}")
    for t in bill.taxes:
        out.append(f"{t.name} {_fmt(t.rate * 100)} % (incluso) sobre R$ {_fmt(t.base)} = R$ {_fmt(t.amount)}")
    out.append(f"Sem tributos: R$ {_fmt(bill.subtotal)}")
    out.append(f"Total: R$ {_fmt(bill.total)}")
    out.extend(f"Aviso: {w}" for w in bill.warnings)
    return out


def unit_prices(
    site: SiteConfig, day: dt.date, tariffs: TariffBook, flags: BandeiraBook, *, modality: str | None = None
) -> dict[str, Decimal]:
    """R$/kWh with taxes per posto on ``day``: ((TUSD + TE + bandeira) / 1000) / ((1 − ICMS)(1 − PIS − COFINS)).

    Used for quick estimates (reports, forecasts) where a full cycle bill is not what is asked.
    """
    mod = modality or site.modality
    cnpj = tariffs.resolve_cnpj(site.distributor)
    choices = tariffs.energy_tariffs(cnpj, day, subgroup=site.subgroup, modality=mod, subclass=site.subclass,
                                     klass=site.klass, detail=site.detail)
    adder = flags.flag_for(day).adder_rs_mwh
    factor = (1 - site.icms) * (1 - site.pis - site.cofins)
    return {posto: (c.record.tusd + c.record.te_rs_mwh + adder) / 1000 / factor for posto, c in choices.items()}


def quick_cost(kwh_by_posto: Mapping[str, float], prices: Mapping[str, Decimal]) -> Decimal:
    """Energy per posto × price per posto (Convencional: every kWh at the single ``"Não se aplica"`` price)."""
    if "Não se aplica" in prices:
        total = sum(kwh_by_posto.values())
        return money(Decimal(str(round(total, 6))) * prices["Não se aplica"])
    return money(sum((Decimal(str(round(kwh_by_posto.get(p, 0.0), 6))) * price for p, price in prices.items()),
                     Decimal(0)))
