"""The SCEE bill (Lei 14.300/2022, REN 1.000 art. 655-I) of a group B unit with distributed generation, line by line.

How much energy is compensated is :mod:`backend.analytics.credits`' job; this module prices it the way a
distributor prints it (a CEMIG-D bill of 2026 reconciled to the cent, research note gd-net-metering §3):

* **Energia elétrica** — the billed (non-compensated) kWh of each posto at the normal tariff (TUSD + TE).
* **Bandeira** — only on the billed kWh (art. 19), pro-rated by the cycle's days in each month.
* **Energia SCEE** — the compensated kWh at the tariff row with ``DscDetalhe = "SCEE"``, and **Energia
  compensada GD I/GD II** — the same kWh credited at that price (GD I) or at (SCEE − share × TUSD Fio B) (GD II),
  so the two lines net to nothing for GD I and to the year's share of the Fio B for GD II (art. 27: 15 % in 2023
  … 60 % in 2026 … 90 % in 2028, by the **calendar year** of the cycle's last day).
* **Custo de disponibilidade** (art. 655-I: the larger of the availability charge and the billed energy + the Fio
  B charge), when the billed kWh fall short of the 30/50/100 kWh minimum; its price is the B1 conventional tariff
  plus the cycle's bandeira. Our reading of the two outcomes, following the distributors' bills:

  - availability larger: the shortfall up to the minimum is charged and the Fio B is absorbed by it (the
    compensated energy is credited at the full SCEE price), so the energy part equals the availability charge;
  - billed energy + Fio B larger: the shortfall is printed and then refunded without its taxes ("Ajuste custo de
    disponibilidade"): its ICMS, PIS and COFINS stay on the bill, because Convênio ICMS 16/2015 never exempts the
    availability charge — what a CEMIG-D bill shows. Other distributors read 655-I as "Fio B up to the
    availability"; that reading is not implemented.

Taxes are charged "por dentro" with one denominator per line, as on the CEMIG bill: unit price with taxes =
tariff / (1 − ICMS − PIS − COFINS), printed with 8 decimals; amount = quantity × unit price rounded to the cent per
line; the total is the sum of the printed lines and the tax lines only say how much of it is tax. Compensated
energy pays no PIS/COFINS (Lei 13.169/2015) and no ICMS when the state exempts it (``gd.icms_exempt_compensated``);
the availability charge always pays all three.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

import msgspec

from backend.analytics.billing import UNIT, WH, TaxLine, days_between, money, tariff_runs
from backend.analytics.credits import Allocation, CreditLot, allocate, compensation_limit
from backend.aneel.components import FioBBook
from backend.aneel.records import NOT_APPLICABLE
from backend.aneel.sites import AVAILABILITY_KWH, GdConfig, SiteConfig
from backend.aneel.tariffs import BandeiraBook, TariffBook

FIO_B_SHARE: Final = {2023: Decimal("0.15"), 2024: Decimal("0.30"), 2025: Decimal("0.45"), 2026: Decimal("0.60"),
                      2027: Decimal("0.75"), 2028: Decimal("0.90")}
"""Lei 14.300 art. 27: share of TUSD Fio B paid on compensated energy by GD II units, per calendar year."""
ZERO: Final = Decimal(0)


class SceeLine(msgspec.Struct, frozen=True):
    """One printed line: ``amount = round(kwh × unit_price, 2)``, ``unit_price = tariff / (1 − taxes)``."""

    kind: str
    """``energia`` | ``bandeira`` | ``scee`` | ``compensada`` | ``disponibilidade`` | ``ajuste_disponibilidade``"""
    description: str
    posto: str
    kwh: Decimal
    tariff_rs_kwh: Decimal
    """Without taxes (negative for a credit)."""
    unit_price: Decimal
    """With the line's taxes, 8 decimals, as printed."""
    amount: Decimal
    icms: Decimal
    pis: Decimal
    cofins: Decimal
    reh: str = ""


class SceeBill(msgspec.Struct, frozen=True):
    site: str
    distributor: str
    cnpj: str
    regime: str
    modality: str
    start: dt.date
    end: dt.date
    days: int
    consumption: dict[str, Decimal]
    injection: dict[str, Decimal]
    compensated: dict[str, Decimal]
    billed: dict[str, Decimal]
    fio_b_share: Decimal
    fio_b_rs_mwh: dict[str, Decimal]
    """TUSD Fio B used per posto (last run of the cycle)."""
    availability: str
    """``nao_se_aplica`` | ``complemento`` (availability larger) | ``ajuste`` (billed energy + Fio B larger)."""
    lines: list[SceeLine]
    taxes: list[TaxLine]
    """Each tax's base is the sum of the amounts of the lines that carry it."""
    total: Decimal
    credits: Allocation
    rehs: list[str]
    warnings: list[str]


def fio_b_share(gd: GdConfig, year: int) -> tuple[Decimal, str]:
    """The share of TUSD Fio B on compensated energy, and a warning when it is an assumption."""
    if gd.regime == "GD I" or year < 2023:
        return ZERO, ""
    if year in FIO_B_SHARE:
        return FIO_B_SHARE[year], ""
    return Decimal(1), (f"{year}: regra do art. 17 da Lei 14.300 ainda sem valores da ANEEL; assumidos 100 % do "
                        "Fio B sobre a energia compensada")


def _unit(tariff: Decimal, icms: Decimal, pis: Decimal, cofins: Decimal) -> Decimal:
    return (tariff / (1 - icms - pis - cofins)).quantize(UNIT, rounding=ROUND_HALF_UP)


def _kwh(value: Decimal | float) -> Decimal:
    return Decimal(str(value)).quantize(WH, rounding=ROUND_HALF_UP)


def scee_bill(
    site: SiteConfig,
    start: dt.date,
    end: dt.date,
    consumption: Mapping[str, Decimal | float],
    injection: Mapping[str, Decimal | float],
    credits: Sequence[CreditLot],
    tariffs: TariffBook,
    flags: BandeiraBook,
    fio_b: FioBBook,
    *,
    modality: str | None = None,
) -> SceeBill:
    """The SCEE bill of ``[start, end]`` (local dates, inclusive): consumption and injection per ANEEL posto
    (any key for Convencional), the credits carried in from earlier cycles; the cycle's reference month is the
    month of ``end``."""
    gd = site.gd
    if gd is None:
        raise ValueError(f"{site.id}: site sem geração distribuída (tabela [site.gd])")
    if end < start:
        raise ValueError("fim antes do início")
    mod = modality or site.modality
    cnpj = tariffs.resolve_cnpj(site.distributor)
    days = days_between(start, end)
    n = len(days)
    warnings: list[str] = []
    rehs: list[str] = []
    postos = ["Ponta", "Intermediário", "Fora ponta"] if mod == "Branca" else [NOT_APPLICABLE]

    def per_posto(values: Mapping[str, Decimal | float]) -> dict[str, Decimal]:
        if mod != "Branca":
            return {NOT_APPLICABLE: _kwh(sum((Decimal(str(v)) for v in values.values()), ZERO))}
        return {p: _kwh(values.get(p, 0)) for p in postos}

    cons, inj = per_posto(consumption), per_posto(injection)
    minimum = AVAILABILITY_KWH.get(site.phases, 0)
    alloc = allocate(end, cons, inj, credits,
                     limit_kwh=compensation_limit(gd.regime, sum(cons.values(), ZERO), minimum))
    comp = alloc.compensated
    share, note = fio_b_share(gd, end.year)
    if note:
        warnings.append(note)
    full = (site.icms, site.pis, site.cofins)
    scee_rates = (ZERO if gd.icms_exempt_compensated else site.icms, ZERO, ZERO)

    lines: list[SceeLine] = []
    pre_tax = ZERO  # billed energy + bandeira + Fio B, without taxes: the art. 655-I comparison

    def add(kind: str, description: str, posto: str, kwh: Decimal, tariff: Decimal,
            rates: tuple[Decimal, Decimal, Decimal], reh: str = "") -> None:
        unit = _unit(tariff, *rates)
        lines.append(SceeLine(kind=kind, description=description, posto=posto, kwh=kwh, tariff_rs_kwh=tariff,
                              unit_price=unit, amount=money(kwh * unit), icms=rates[0], pis=rates[1],
                              cofins=rates[2], reh=reh))

    # Billed energy at the normal tariff, per posto and tariff run (pro-rated by days).
    energy_runs = tariff_runs(tariffs, cnpj, days, site, mod, postos, rehs=rehs, warnings=warnings)
    for p in postos:
        if alloc.billed[p] <= 0:
            continue
        for choice, nd in energy_runs[p]:
            rec = choice.record
            qty = _kwh(alloc.billed[p] * nd / n)
            tariff = (rec.tusd + rec.te_rs_mwh) / 1000
            label = "" if p == NOT_APPLICABLE else f" {p}"
            add("energia", f"Energia elétrica{label} ({nd}/{n} dias)", p, qty, tariff, full, rec.reh)
            pre_tax += qty * tariff

    # Bandeira on the billed energy only; its cycle average also prices the custo de disponibilidade.
    month_days: dict[dt.date, int] = {}
    for d in days:
        month_days[d.replace(day=1)] = month_days.get(d.replace(day=1), 0) + 1
    adder_avg = ZERO
    for month, nd in month_days.items():
        flag = flags.flag_for(month)
        if flag.source == "estimada":
            warnings.append(f"bandeira de {month:%m/%Y} ainda não publicada: assumida {flag.flag}")
        adder_avg += flag.adder_rs_mwh * nd / n
        qty = _kwh(alloc.billed_total * nd / n)
        if flag.adder_rs_mwh > 0 and qty > 0:
            add("bandeira", f"Adicional bandeira {flag.flag} {month:%m/%Y} ({nd}/{n} dias)", "", qty,
                flag.adder_rs_mwh / 1000, full, flag.resolution)
            pre_tax += qty * flag.adder_rs_mwh / 1000

    # Compensated energy: SCEE price per posto and run, and the Fio B the GD II credit leaves out.
    comp_postos = [p for p in postos if comp[p] > 0]
    scee_runs = tariff_runs(tariffs, cnpj, days, site, mod, comp_postos, detail="SCEE", rehs=rehs,
                            warnings=warnings) if comp_postos else {}
    priced: list[tuple[str, int, Decimal, Decimal, Decimal, str]] = []  # posto, days, kWh, SCEE, Fio B, REH
    fio_b_used: dict[str, Decimal] = {}
    for p, runs in scee_runs.items():
        offset = 0
        for choice, nd in runs:
            rec = choice.record
            qty = _kwh(comp[p] * nd / n)
            run_start, offset = days[offset], offset + nd
            fb = ZERO
            if share:
                found = fio_b.fio_b(cnpj, run_start, subgroup=site.subgroup, modality=mod, posto=p,
                                    klass=site.klass, subclass=site.subclass, configured=gd.fio_b_rs_mwh)
                fb = found.rs_mwh
                fio_b_used[p] = fb
                if found.source == "configurado":
                    msg = f"TUSD Fio B sem dado da ANEEL: usado o valor configurado ({fb} R$/MWh)"
                    if msg not in warnings:
                        warnings.append(msg)
                elif found.expired:
                    msg = f"TUSD Fio B de vigência vencida ({found.reh}): valor provisório"
                    if msg not in warnings:
                        warnings.append(msg)
            priced.append((p, nd, qty, (rec.tusd + rec.te_rs_mwh) / 1000, fb, rec.reh))
            pre_tax += qty * share * fb / 1000

    availability = "nao_se_aplica"
    shortfall = Decimal(minimum) - alloc.billed_total if minimum else ZERO
    if shortfall > 0:
        conv = next(iter(tariffs.energy_tariffs(cnpj, end, subgroup=site.subgroup, modality="Convencional",
                                                subclass=site.subclass, klass=site.klass,
                                                detail=site.detail).values())).record
        avail_tariff = (conv.tusd + conv.te_rs_mwh + adder_avg) / 1000
        availability = "ajuste" if pre_tax >= minimum * avail_tariff else "complemento"

    gd_label = gd.regime
    for p, nd, qty, scee, fb, reh in priced:
        label = "" if p == NOT_APPLICABLE else f" {p}"
        add("scee", f"Energia SCEE{label} ({nd}/{n} dias)", p, qty, scee, scee_rates, reh)
        # With the availability charge larger, the Fio B is absorbed by it: credited at the full SCEE price.
        credit = scee if availability == "complemento" else scee - share * fb / 1000
        add("compensada", f"Energia compensada {gd_label}{label} ({nd}/{n} dias)", p, qty, -credit, scee_rates,
            reh)

    if availability != "nao_se_aplica":
        add("disponibilidade", f"Custo de disponibilidade (mínimo {minimum} kWh)", NOT_APPLICABLE, shortfall,
            avail_tariff, full, conv.reh)
        if availability == "ajuste":
            add("ajuste_disponibilidade", "Ajuste custo de disponibilidade (art. 655-I)", NOT_APPLICABLE,
                shortfall, -avail_tariff, (ZERO, ZERO, ZERO), conv.reh)

    taxes = []
    for name, attr, rate in (("ICMS", "icms", site.icms), ("PIS/PASEP", "pis", site.pis),
                             ("COFINS", "cofins", site.cofins)):
        taxed = [ln for ln in lines if getattr(ln, attr) > 0]
        base = sum((ln.amount for ln in taxed), ZERO)
        taxes.append(TaxLine(name=name, rate=rate, base=base,
                             amount=money(sum((ln.amount * getattr(ln, attr) for ln in taxed), ZERO))))
    return SceeBill(
        site=site.id, distributor=tariffs.current_name(cnpj), cnpj=cnpj, regime=gd.regime, modality=mod,
        start=start, end=end, days=n, consumption=cons, injection=inj, compensated=comp, billed=alloc.billed,
        fio_b_share=share, fio_b_rs_mwh=fio_b_used, availability=availability, lines=lines, taxes=taxes,
        total=sum((ln.amount for ln in lines), ZERO), credits=alloc, rehs=rehs, warnings=warnings,
    )


def _fmt(d: Decimal) -> str:
    return f"{d:f}".replace(".", ",")


def _fmt_kwh(d: Decimal) -> str:
    return _fmt(d.quantize(WH))


def explain_scee(bill: SceeBill) -> list[str]:
    """The SCEE bill as pt-BR text lines: each line's quantity × unit price, the taxes, the credits."""
    c = bill.credits
    out = [f"Conta SCEE {bill.site} — {bill.regime} — {bill.modality} — {bill.distributor} "
           f"({bill.start:%d/%m/%Y} a {bill.end:%d/%m/%Y}, {bill.days} dias)",
           f"Consumo {_fmt_kwh(sum(bill.consumption.values(), ZERO))} kWh; injeção "
           f"{_fmt_kwh(sum(bill.injection.values(), ZERO))} kWh; compensado {_fmt_kwh(c.compensated_total)} kWh "
           f"(injeção do mês {_fmt_kwh(sum(c.from_injection.values(), ZERO))}, créditos {_fmt_kwh(c.used_total)}); "
           f"faturado {_fmt_kwh(c.billed_total)} kWh"]
    if bill.fio_b_share:
        out.append(f"TUSD Fio B: {_fmt(bill.fio_b_share * 100)} % em {bill.end.year} de " + ", ".join(
            f"{_fmt(v)} R$/MWh" + ("" if p == NOT_APPLICABLE else f" ({p})") for p, v in bill.fio_b_rs_mwh.items()))
    for ln in bill.lines:
        out.append(f"{ln.description}: {_fmt(ln.kwh)} kWh × {_fmt(ln.unit_price)} = R$ {_fmt(ln.amount)}")
    for t in bill.taxes:
        out.append(f"{t.name} {_fmt(t.rate * 100)} % (incluso) sobre R$ {_fmt(t.base)} = R$ {_fmt(t.amount)}")
    out.append(f"Total: R$ {_fmt(bill.total)}")
    out.append(f"Créditos: gerados {_fmt_kwh(c.generated)} kWh, usados {_fmt_kwh(c.used_total)} kWh, expirados "
               f"{_fmt_kwh(c.expired_total)} kWh; saldo {_fmt_kwh(c.balance_total)} kWh"
               + "".join(f"; {lot.origin:%m/%Y}: {_fmt_kwh(lot.kwh)}" for lot in c.balance))
    out.extend(f"Aviso: {w}" for w in bill.warnings)
    return out
