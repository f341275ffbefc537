"""Bill estimate for a low-voltage (group B) consumer, line by line, as a distributor computes it.

For a billing cycle of N days and the energy of each posto:

1. **Tariff**: each posto's kWh x (TUSD + TE)/1000 of the REH in force, pro-rated by days when a new REH starts
   inside the cycle (one line per component, posto and vigência: ``kWh x R$/MWh / 1000 x dias/N``).
2. **Bandeira**: total kWh x adder/1000 of each month's flag x (days of the cycle in that month)/N
   (REN 1.000/2021 art. 307: "tarifa proporcional aos dias de vigência de cada bandeira").
3. **Taxes "por dentro"**: ``total = sem_tributos / ((1 − ICMS) × (1 − PIS − COFINS))``;
   ``ICMS = total × ICMS%``, ``PIS = (total − ICMS) × PIS%``, ``COFINS = (total − ICMS) × COFINS%``.

Every line is rounded to the cent (half up) and the total is the sum of the printed lines, so a person can redo
the bill with a calculator. kWh are rounded to the Wh before pricing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal

import msgspec

from backend.aneel.sites import AVAILABILITY_KWH, SiteConfig
from backend.aneel.tariffs import BandeiraBook, TariffBook, TariffChoice, TariffNotFound

CENT = Decimal("0.01")
WH = Decimal("0.001")


def money(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


class BillLine(msgspec.Struct, frozen=True):
    """One printed line: ``amount = round(kwh × price_rs_mwh / 1000 × days / cycle_days)``."""

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
    """Sum of the lines, before taxes."""
    tax_factor: Decimal
    """(1 − ICMS) × (1 − PIS − COFINS)."""
    taxes: list[TaxLine]
    total: Decimal
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

    kwh: dict[str, Decimal] = {}
    # Round the energy to whole Wh once, here: every line below multiplies the same quantized kWh, so the lines
    # of one bill (and the same energy priced as Convencional and as Branca) add up to the cent.
    if mod == "Convencional":
        total = sum((Decimal(str(v)) for v in kwh_by_posto.values()), Decimal(0))
        kwh["Não se aplica"] = total.quantize(WH, rounding=ROUND_HALF_UP)
    else:
        for posto in ("Ponta", "Intermediário", "Fora ponta"):
            kwh[posto] = Decimal(str(kwh_by_posto.get(posto, 0))).quantize(WH, rounding=ROUND_HALF_UP)
    kwh_total = sum(kwh.values(), Decimal(0))

    lines: list[BillLine] = []
    rehs: list[str] = []
    runs_by_posto = tariff_runs(tariffs, cnpj, days, site, mod, list(kwh), rehs=rehs, warnings=warnings)
    for posto, energy in kwh.items():
        for choice, ndays in runs_by_posto[posto]:
            rec = choice.record
            label = "" if posto == "Não se aplica" else f" {posto}"
            for kind, price in (("tusd", rec.tusd), ("te", rec.te_rs_mwh)):
                amount = money(energy * price / 1000 * ndays / n)
                lines.append(BillLine(
                    kind=kind,
                    description=f"Consumo {kind.upper()}{label} ({ndays}/{n} dias)",
                    posto=posto, kwh=energy, price_rs_mwh=price, days=ndays, cycle_days=n, amount=amount,
                    reh=rec.reh,
                ))

    # Custo de disponibilidade: the shortfall up to the minimum, priced at the conventional energy tariff.
    if site.phases and kwh_total < AVAILABILITY_KWH[site.phases]:
        short = Decimal(AVAILABILITY_KWH[site.phases]) - kwh_total
        conv = tariffs.energy_tariffs(cnpj, end, subgroup=site.subgroup, modality="Convencional",
                                      subclass=site.subclass, klass=site.klass, detail=site.detail)
        rec = next(iter(conv.values())).record
        price = rec.tusd + rec.te_rs_mwh
        lines.append(BillLine(
            kind="disponibilidade",
            description=f"Custo de disponibilidade (mínimo {AVAILABILITY_KWH[site.phases]} kWh)",
            posto="Não se aplica", kwh=short, price_rs_mwh=price, days=n, cycle_days=n,
            amount=money(short * price / 1000), reh=rec.reh,
        ))

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
        lines.append(BillLine(
            kind="bandeira",
            description=f"Bandeira {flag.flag} {month:%m/%Y} ({ndays}/{n} dias)",
            posto="", kwh=kwh_total, price_rs_mwh=flag.adder_rs_mwh, days=ndays, cycle_days=n,
            amount=money(kwh_total * flag.adder_rs_mwh / 1000 * ndays / n), reh=flag.resolution,
        ))

    subtotal = sum((ln.amount for ln in lines), Decimal(0))
    # Taxes "por dentro": ICMS and PIS/COFINS are part of their own base, so the gross is the subtotal divided by
    # the factor; PIS/COFINS exclude ICMS from their base (STF, RE 574.706). Only the published lines are
    # rounded, from the exact ICMS, so the base shown is what the rate multiplies.
    factor = (1 - site.icms) * (1 - site.pis - site.cofins)
    gross = subtotal / factor
    icms_exact = gross * site.icms
    icms = money(icms_exact)
    pis = money((gross - icms_exact) * site.pis)
    cofins = money((gross - icms_exact) * site.cofins)
    taxes = [
        TaxLine(name="ICMS", rate=site.icms, base=money(gross), amount=icms),
        TaxLine(name="PIS/PASEP", rate=site.pis, base=money(gross - icms_exact), amount=pis),
        TaxLine(name="COFINS", rate=site.cofins, base=money(gross - icms_exact), amount=cofins),
    ]
    return Bill(
        site=site.id, distributor=tariffs.current_name(cnpj), cnpj=cnpj, subgroup=site.subgroup, modality=mod,
        start=start, end=end, days=n, kwh=kwh, kwh_total=kwh_total, lines=lines, subtotal=subtotal,
        tax_factor=factor, taxes=taxes, total=subtotal + icms + pis + cofins, rehs=rehs, warnings=warnings,
    )


def explain(bill: Bill) -> list[str]:
    """The bill as pt-BR text lines, each with the arithmetic that produced it."""
    out = [f"Conta estimada {bill.site} — {bill.modality} {bill.subgroup} — {bill.distributor} "
           f"({bill.start:%d/%m/%Y} a {bill.end:%d/%m/%Y}, {bill.days} dias)"]
    for ln in bill.lines:
        out.append(f"{ln.description}: {_fmt(ln.kwh)} kWh × {_fmt(ln.price_rs_mwh)} R$/MWh ÷ 1000 × "
                   f"{ln.days}/{ln.cycle_days} = R$ {_fmt(ln.amount)}")
    out.append(f"Subtotal sem tributos: R$ {_fmt(bill.subtotal)}")
    out.append(f"Com tributos: {_fmt(bill.subtotal)} ÷ {_fmt(bill.tax_factor)}")
    for t in bill.taxes:
        out.append(f"{t.name} {_fmt(t.rate * 100)} % sobre R$ {_fmt(t.base)} = R$ {_fmt(t.amount)}")
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
