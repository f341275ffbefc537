"""Injection, net energy and self-consumption per bucket, for sites that generate (micro/minigeração).

A bidirectional meter at the grid connection keeps two registers: the imported energy (what the site drew from
the grid, ``energy_mwh``) and the exported energy (what it injected, ``energy_export_mwh``). Both go through the
same reset/spike/gap rules and the same paths (raw readings, rollups, energy series: backend/store/), so their
buckets line up one to one and this module only combines finished consumptions, without I/O:

* injeção = the export register's energy; líquido = consumo − injeção (negative when the site exported more);
* with generation meters (``generation`` in the site config: a PV inverter's meter, whose import register counts
  what the panels produced), geração = their energy and autoconsumo = (geração − injeção) / geração, the share of
  the generation used on site, clamped to [0, 1] (a bucket whose injection outran the metered generation, or
  without generation, has none). Generation is not consumption: a whole site's figures leave those meters out
  (:func:`without`).
"""

from __future__ import annotations

import msgspec

from backend.store.registers import Bucket, Consumption


def without(total: Consumption, part: Consumption) -> Consumption:
    """``total`` minus ``part`` per bucket (the same edges): a site's energy without its generation meters. The
    anomaly counts and gaps stay those of ``total``, which includes them."""
    buckets = [msgspec.structs.replace(b, kwh=round(b.kwh - p.kwh, 6))
               for b, p in zip(total.buckets, part.buckets, strict=True)]
    return msgspec.structs.replace(total, buckets=buckets, kwh_total=round(total.kwh_total - part.kwh_total, 6))


def _share(generated: float, injected: float) -> float | None:
    if generated <= 0:
        return None
    return round(min(max((generated - injected) / generated, 0.0), 1.0), 4)


def combine(consumption: Consumption, export: Consumption, generation: Consumption | None = None) -> Consumption:
    """``consumption`` with injection and net energy per bucket and in total (and generation and the
    self-consumption share when ``generation`` is given); all three over the same bucket edges."""
    gen = generation.buckets if generation is not None else [None] * len(consumption.buckets)
    buckets: list[Bucket] = []
    for b, x, g in zip(consumption.buckets, export.buckets, gen, strict=True):
        buckets.append(msgspec.structs.replace(
            b, injecao_kwh=x.kwh, liquido_kwh=round(b.kwh - x.kwh, 6), estimated=b.estimated or x.estimated,
            geracao_kwh=g.kwh if g is not None else None,
            autoconsumo=_share(g.kwh, x.kwh) if g is not None else None))
    gen_total = generation.kwh_total if generation is not None else None
    return msgspec.structs.replace(
        consumption, buckets=buckets, injecao_kwh=export.kwh_total,
        liquido_kwh=round(consumption.kwh_total - export.kwh_total, 6), geracao_kwh=gen_total,
        autoconsumo=_share(gen_total, export.kwh_total) if gen_total is not None else None)
