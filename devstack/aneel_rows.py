"""The rows the fake ANEEL portal serves: ANEEL's columns, ids and values, exactly as the real portal writes them.

Kept apart from the CKAN server (:mod:`devstack.aneel_fake`) because they are data, not protocol: the backend's
unit tests parse and price these same rows directly (tariff books, bandeiras, bills) without starting a server,
and the fake seeds itself from them, so the offline demo, the HTTP tests and the pricing tests all see the same
tariffs.

- :data:`REAL_TARIFFS`, :data:`ACIONAMENTO`, :data:`ADICIONAL`: real rows quoted in the research notes
  (CEMIG-D, Light, Enel SP, CEA; bandeira months and adders), values as ANEEL writes them (decimal comma,
  ``Não se aplica``, a trailing space or an empty ``DscREH``).
- :data:`QUIRK_TARIFFS`: generated rows that reproduce ANEEL's quirks (overlapping vigências, 1-January split, an
  expired tariff with no successor, a rename under one CNPJ).
- :data:`SCEE_TARIFFS`: ``DscDetalhe = "SCEE"`` rows (the price of compensated energy) for the Light rows above.
- :data:`COMPONENTS`: Componentes Tarifárias rows per yearly resource (``TUSD_FioB`` for GD II, other components
  a client must filter out, a value in scientific notation, a CNPJ that lost its leading zero).
- :func:`bulk_tariffs`: a bulk distributor to exercise paging; :func:`tariff_row` builds one row for a test.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

# ANEEL's package and resource ids, written down here on their own: the fake copies ANEEL, not the backend's idea
# of it, so a wrong id in the backend fails against the fake as it would against the real portal.
TARIFFS_RESOURCE: Final = "fcf2906c-7c32-4b9b-a637-054e7a5234f4"
BANDEIRA_ACIONAMENTO_RESOURCE: Final = "0591b8f6-fe54-437b-b72b-1aa2efd46e42"
BANDEIRA_ADICIONAL_RESOURCE: Final = "5879ca80-b3bd-45b1-a135-d9b77c1d5b36"
TARIFFS_PACKAGE: Final = "5a583f3e-1646-4f67-bf0f-69db4203e89e"
COMPONENTS_PACKAGE: Final = "componentes-tarifarias"
COMPONENTS_RESOURCES: Final = {2024: "70ac08d1-53fc-4ceb-9c22-3a3a2c70e9fa",
                               2025: "a4060165-3a0c-404f-926c-83901088b67c",
                               2026: "e8717aa8-2521-453f-bf16-fbb9a16eea39"}
"""Yearly resources ``componentes-tarifarias-{YYYY}`` (research note §5)."""
COMPONENT_FIELDS: Final = (
    "DscResolucaoHomologatoria", "SigNomeAgente", "NumCPFCNPJ", "DatInicioVigencia", "DatFimVigencia",
    "DscBaseTarifaria", "DscSubGrupoTarifario", "DscModalidadeTarifaria", "DscClasseConsumidor",
    "DscSubClasseConsumidor", "DscDetalheConsumidor", "DscPostoTarifario", "DscUnidade", "SigNomeAgenteAcessante",
    "DscComponenteTarifario", "VlrComponenteTarifario",
)
BANDEIRAS_PACKAGE: Final = "7f43a020-6dc5-44b8-80b4-d97eaa94436c"
TARIFF_FIELDS: Final = (
    "DatGeracaoConjuntoDados", "DscREH", "SigAgente", "NumCNPJDistribuidora", "DatInicioVigencia",
    "DatFimVigencia", "DscBaseTarifaria", "DscSubGrupo", "DscModalidadeTarifaria", "DscClasse", "DscSubClasse",
    "DscDetalhe", "NomPostoTarifario", "DscUnidadeTerciaria", "SigAgenteAcessante", "VlrTUSD", "VlrTE",
)
ACIONAMENTO_FIELDS: Final = ("DatGeracaoConjuntoDados", "DatCompetencia", "NomBandeiraAcionada",
                             "VlrAdicionalBandeira")
ADICIONAL_FIELDS: Final = ("DatGeracaoConjuntoDados", "DscResolucao", "DatVigencia", "NomBandeiraAcionada",
                           "VlrAdicionalBandeiraRSMWh")
NA: Final = "Não se aplica"
APL: Final = "Tarifa de Aplicação"
REH_CEMIG_2026: Final = "RESOLUÇÃO HOMOLOGATÓRIA Nº 3.589, DE 26 DE MAIO DE 2026"
REH_CEMIG_2025: Final = "RESOLUÇÃO HOMOLOGATÓRIA Nº 3.459, DE 20 DE MAIO DE 2025"
REH_LIGHT_2026: Final = "RESOLUÇÃO HOMOLOGATÓRIA Nº 3.571, DE 10 DE MARÇO DE 2026"


def tariff_row(reh: str, sig: str, cnpj: str, start: str, end: str, sub: str, mod: str, posto: str, tusd: str,
               te: str, *, base: str = APL, klass: str = "Residencial", subclass: str = "Residencial",
               detail: str = NA, unit: str = "MWh", gen: str = "2026-09-30", acc: str = NA) -> dict[str, str]:
    """One tariff row with ANEEL's 17 columns, values as ANEEL writes them."""
    return dict(zip(TARIFF_FIELDS, (gen, reh, sig, cnpj, start, end, base, sub, mod, klass, subclass, detail,
                                    posto, unit, acc, tusd, te), strict=True))


CEMIG: Final = ("CEMIG-D", "06981180000116")
LIGHT: Final = ("LIGHT SESA", "60444437000146")
ENEL: Final = ("ELETROPAULO", "61695227000193")

# Real rows (research notes §2.3 a, c, d).
REAL_TARIFFS: Final[list[dict[str, str]]] = [
    tariff_row(REH_CEMIG_2026, *CEMIG, "2026-05-28", "2027-05-27", "B1", "Convencional", NA, "593,08", "310,21"),
    tariff_row(REH_CEMIG_2026, *CEMIG, "2026-05-28", "2027-05-27", "B1", "Convencional", NA, "553,12", "292,88",
               base="Base Econômica"),
    tariff_row(REH_CEMIG_2026, *CEMIG, "2026-05-28", "2027-05-27", "B1", "Convencional", NA, "593,08", "30,44",
               detail="SCEE"),
    tariff_row(REH_CEMIG_2026, *CEMIG, "2026-05-28", "2027-05-27", "B1", "Convencional", NA, "418,31", "297,02",
               subclass="Residencial Tarifa Social – faixa 01"),
    tariff_row(REH_CEMIG_2026, *CEMIG, "2026-05-28", "2027-05-27", "A2", "Azul", "Fora ponta", "10,97", ",00",
               klass=NA, subclass=NA, detail="APE", unit="kW"),
    tariff_row(REH_CEMIG_2025, *CEMIG, "2026-01-01", "2026-05-27", "B1", "Convencional", NA, "541,30", "317,28"),
    tariff_row(REH_CEMIG_2025, *CEMIG, "2025-05-28", "2025-12-31", "B1", "Convencional", NA, "541,30", "317,28"),
    tariff_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Branca", "Ponta", "1172,93", "441,38"),
    tariff_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Branca", "Intermediário", "829,51",
               "289,33"),
    tariff_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Branca", "Fora ponta", "486,10",
               "289,33"),
    tariff_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Convencional", NA, "578,56", "302,00"),
    tariff_row("RESOLUÇÃO HOMOLOGATÓRIA Nº 3.596, DE 3 DE JULHO DE 2026 ", *ENEL, "2026-07-04", "2027-07-03", "B1",
               "Convencional", NA, "472,42", "316,96"),
    tariff_row("RESOLUÇÃO HOMOLOGATÓRIA Nº 3.477", *ENEL, "2026-01-01", "2026-07-03", "B1", "Convencional", NA,
               "432,44", "292,74"),
    tariff_row("", "CEA", "05965546000109", "2026-04-13", "2027-05-24", "A2", "Azul", "Fora ponta", ",00", ",00",
               base="Base Econômica", klass=NA, subclass=NA, detail="APE", unit="kW", gen="2026-10-02"),
]

# Generated rows reproducing quirks (values invented, shapes real).
QUIRK_TARIFFS: Final[list[dict[str, str]]] = [
    # Overlap: the same period published by two acts; the later start must win from 2026-03-01.
    tariff_row("RESOLUÇÃO HOMOLOGATÓRIA Nº 9.001, DE 1 DE JANEIRO DE 2026", "DIST-SOBREPOSTA", "11111111000191",
               "2026-01-01", "2026-12-31", "B1", "Convencional", NA, "500,00", "300,00"),
    tariff_row("DESPACHO Nº 9.002, DE 20 DE FEVEREIRO DE 2026", "DIST-SOBREPOSTA", "11111111000191",
               "2026-03-01", "2026-12-31", "B1", "Convencional", NA, "510,00", "305,00"),
    # Expired with no successor published yet.
    tariff_row("RESOLUÇÃO HOMOLOGATÓRIA Nº 9.003, DE 1 DE ABRIL DE 2025", "DIST-VENCIDA", "22222222000191",
               "2025-04-22", "2026-04-21", "B1", "Convencional", NA, "610,00", "290,00"),
    # Rename under the same CNPJ (RGE SUL -> RGE pattern).
    tariff_row("RESOLUÇÃO HOMOLOGATÓRIA Nº 9.004, DE 15 DE ABRIL DE 2025", "RGE SUL", "02016440000162",
               "2025-04-19", "2026-04-18", "B1", "Convencional", NA, "450,00", "280,00"),
    tariff_row("RESOLUÇÃO HOMOLOGATÓRIA Nº 9.005, DE 14 DE ABRIL DE 2026", "RGE", "02016440000162",
               "2026-04-19", "2027-04-18", "B1", "Convencional", NA, "470,00", "285,00"),
]


# SCEE rows for Light (shape real, values generated): TUSD as the plain rows, a lower TE, as in CEMIG-D's real
# SCEE row above (593,08 / 30,44).
SCEE_TARIFFS: Final[list[dict[str, str]]] = [
    tariff_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Convencional", NA, "578,56", "32,00",
               detail="SCEE"),
    tariff_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Branca", "Ponta", "1172,93", "41,38",
               detail="SCEE"),
    tariff_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Branca", "Intermediário", "829,51",
               "29,33", detail="SCEE"),
    tariff_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Branca", "Fora ponta", "486,10", "29,33",
               detail="SCEE"),
]


def component_row(reh: str, sig: str, cnpj: str, start: str, end: str, sub: str, mod: str, posto: str,
                  component: str, value: str, *, base: str = APL, klass: str = "Residencial",
                  subclass: str = "Residencial", detail: str = "SCEE", unit: str = "R$/MWh",
                  acc: str = NA) -> dict[str, str]:
    """One Componentes Tarifárias row with ANEEL's 16 columns, values as ANEEL writes them."""
    return dict(zip(COMPONENT_FIELDS, (reh, sig, cnpj, start, end, base, sub, mod, klass, subclass, detail, posto,
                                       unit, acc, component, value), strict=True))


# Componentes Tarifárias per yearly resource. Shapes real; the Fio B 441,478264 is a value a public client's
# fixture shows next to TUSD 683,43 / TE 322,63 (distributor not identified), used here for CEMIG-D; the other
# values are generated. Light's 2026 resource lists its CNPJ without the leading zero it does not have, CEMIG's
# lost it (06981180000116 -> 6981180000116), as an integer column in ANEEL's Parquet does.
COMPONENTS: Final[dict[int, list[dict[str, str]]]] = {
    2025: [
        component_row(REH_CEMIG_2025, "CEMIG-D", "06981180000116", "2025-05-28", "2026-05-27", "B1",
                      "Convencional", NA, "TUSD_FioB", "402,115000"),
    ],
    2026: [
        component_row(REH_CEMIG_2026, "CEMIG-D", "6981180000116", "2026-05-28", "2027-05-27", "B1",
                      "Convencional", NA, "TUSD_FioB", "441,478264"),
        component_row(REH_CEMIG_2026, "CEMIG-D", "6981180000116", "2026-05-28", "2027-05-27", "B1",
                      "Convencional", NA, "TUSD_FioB", "431,000000", detail=NA),
        component_row(REH_CEMIG_2026, "CEMIG-D", "6981180000116", "2026-05-28", "2027-05-27", "B1",
                      "Convencional", NA, "TUSD", "593,080000"),
        component_row(REH_CEMIG_2026, "CEMIG-D", "6981180000116", "2026-05-28", "2027-05-27", "B1",
                      "Convencional", NA, "TUSD_PT", "8,9999999999999995E-9"),
        component_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Branca", "Ponta", "TUSD_FioB",
                      "780,000000"),
        component_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Branca", "Intermediário",
                      "TUSD_FioB", "520,000000"),
        component_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Branca", "Fora ponta",
                      "TUSD_FioB", "260,000000"),
        component_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Convencional", NA, "TUSD_FioB",
                      "310,000000"),
        component_row(REH_LIGHT_2026, *LIGHT, "2026-03-15", "2027-03-14", "B1", "Convencional", NA, "TE_ENERGIA",
                      "190,120000"),
    ],
}


def bulk_tariffs(n: int) -> list[dict[str, str]]:
    """``n`` generated rows of one distributor (``DIST-LOTE``), one per day of vigência, to exercise paging."""
    out = []
    day0 = dt.date(2015, 1, 1)
    for i in range(n):
        d = day0 + dt.timedelta(days=i)
        out.append(tariff_row(f"RESOLUÇÃO HOMOLOGATÓRIA Nº {5000 + i}", "DIST-LOTE", "33333333000191",
                              d.isoformat(), d.isoformat(), "B1", "Convencional", NA,
                              f"{400 + i % 97},{i % 100:02d}", f"{250 + i % 13},50"))
    return out


ACIONAMENTO: Final[list[dict[str, str]]] = [
    dict(zip(ACIONAMENTO_FIELDS, ("2026-09-28", m, f, v), strict=True)) for m, f, v in [
        ("2024-10-01", "Vermelha P2", "78,77"), ("2024-11-01", "Amarela", "18,85"), ("2024-12-01", "Verde", ",00"),
        ("2025-01-01", "Verde", ",00"), ("2025-02-01", "Verde", ",00"), ("2025-03-01", "Verde", ",00"),
        ("2025-04-01", "Verde", ",00"), ("2025-05-01", "Amarela", "18,85"), ("2025-06-01", "Vermelha P1", "44,63"),
        ("2025-07-01", "Vermelha P1", "44,63"), ("2025-08-01", "Vermelha P2", "78,77"),
        ("2025-09-01", "Vermelha P2", "78,77"), ("2025-10-01", "Vermelha P1", "44,63"),
        ("2025-11-01", "Vermelha P1", "44,63"), ("2025-12-01", "Amarela", "18,85"), ("2026-01-01", "Verde", ",00"),
        ("2026-02-01", "Verde", ",00"), ("2026-03-01", "Verde", ",00"), ("2026-04-01", "Verde", ",00"),
        ("2026-05-01", "Amarela", "18,85"), ("2026-06-01", "Amarela", "18,85"), ("2026-07-01", "Amarela", "18,85"),
        ("2026-08-01", "Amarela", "18,85"), ("2026-09-01", "Amarela", "18,85"),
    ]
]

ADICIONAL: Final[list[dict[str, str]]] = [
    dict(zip(ADICIONAL_FIELDS, ("2026-07-15", r, d, f, v), strict=True)) for r, d, f, v in [
        ("REH nº 2.888/2021", "2021-07-01", "Amarela", "18,74"), ("REH nº 2.888/2021", "2021-07-01", "Vermelha P1",
                                                                  "39,71"),
        ("REH nº 2.888/2021", "2021-07-01", "Vermelha P2", "94,92"),
        ("RES CREG nº 3/2021", "2021-09-01", "Escassez Hídrica", "142,00"),
        ("REH nº 3.051/2022", "2022-07-01", "Amarela", "29,89"), ("REH nº 3.051/2022", "2022-07-01", "Vermelha P1",
                                                                  "65,00"),
        ("REH nº 3.051/2022", "2022-07-01", "Vermelha P2", "97,95"),
        ("REH nº 3.306/2024", "2024-04-01", "Amarela", "18,85"), ("REH nº 3.306/2024", "2024-04-01", "Vermelha P1",
                                                                  "44,63"),
        ("REH nº 3.306/2024", "2024-04-01", "Vermelha P2", "78,77"),
    ]
]
