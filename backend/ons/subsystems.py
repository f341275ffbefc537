"""Which SIN subsystem a site draws from, known from its distributor (sigla or CNPJ).

ONS's four subsystems follow the grid, not the map exactly: Sudeste/Centro-Oeste (SE) also holds Acre and
Rondônia; Norte (N) holds Pará, Tocantins, Maranhão, Amapá and Amazonas; Nordeste (NE) the other north-eastern
states; Sul (S) Paraná, Santa Catarina and Rio Grande do Sul. A distributor serves one state (or a part of one),
so its area lies in one subsystem.

The table covers the large distributors by the sigla ANEEL uses (``SigAgente`` in its tariff data, and the
older names people still write) and, by CNPJ, the distributors CDS already knows by CNPJ. Matching ignores case,
accents, spaces and punctuation (``CEMIG-D`` = ``cemig d``). A distributor not listed here — a small cooperative,
an isolated system (Roraima's Boa Vista, most of the Amazon outside Manaus) — gets no subsystem: the site then
sets ``subsystem`` in the sites file, which always wins over the table.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from backend.ons.datasets import SUBSYSTEMS

_BY_SIGLA: Final[dict[str, tuple[str, ...]]] = {
    "SE": (
        "CEMIG-D", "CEMIG", "ELETROPAULO", "ENEL SP", "LIGHT SESA", "LIGHT", "ENEL RJ", "AMPLA", "CPFL-PAULISTA",
        "CPFL PAULISTA", "CPFL-PIRATINING", "CPFL PIRATININGA", "CPFL SANTA CRUZ", "EDP SP", "BANDEIRANTE",
        "EDP ES", "ESCELSA", "ELEKTRO", "NEOENERGIA ELEKTRO", "ENERGISA MG", "ENERGISA NOVA FRIBURGO", "ENERGISA MS",
        "ENERGISA MT", "ENERGISA SUL-SUDESTE", "ENERGISA SSE", "ENERGISA RO", "CERON", "ENERGISA AC", "ELETROACRE",
        "NEOENERGIA DF", "CEB-DIS", "CEB", "EQUATORIAL GO", "ENEL GO", "CELG-D", "CELG", "CHESP", "DMED",
    ),
    "S": (
        "COPEL-DIS", "COPEL", "CELESC-DIS", "CELESC", "RGE", "RGE SUL", "CEEE-D", "CEEE EQUATORIAL", "COCEL",
        "ELETROCAR", "DEMEI", "HIDROPAN", "MUXENERGIA", "NOVA PALMA", "FORCEL", "IGUACU ENERGIA",
    ),
    "NE": (
        "COELBA", "NEOENERGIA COELBA", "CELPE", "NEOENERGIA PE", "COSERN", "NEOENERGIA COSERN", "ENERGISA PB",
        "EPB", "ENERGISA BO", "ENERGISA SE", "ESE", "ENEL CE", "COELCE", "EQUATORIAL PI", "CEPISA",
        "EQUATORIAL AL", "CEAL", "SULGIPE",
    ),
    "N": (
        "EQUATORIAL PA", "CELPA", "EQUATORIAL MA", "CEMAR", "ENERGISA TO", "CELTINS", "CEA", "CEA EQUATORIAL",
        "AME", "AMAZONAS ENERGIA", "AMAZONAS D",
    ),
}

_BY_CNPJ: Final[dict[str, str]] = {
    "06981180000116": "SE",  # CEMIG Distribuição
    "61695227000193": "SE",  # Eletropaulo (Enel SP)
    "60444437000146": "SE",  # Light SESA
}


def _key(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Z0-9]", "", plain.upper())


_INDEX: Final[dict[str, str]] = {_key(s): code for code, siglas in _BY_SIGLA.items() for s in siglas}


def subsystem_for(distributor: str) -> str | None:
    """SE, S, NE or N for a distributor's sigla or CNPJ; None when it is not in the table."""
    digits = re.sub(r"\D", "", distributor)
    if len(digits) >= 11:
        return _BY_CNPJ.get(digits.zfill(14))
    return _INDEX.get(_key(distributor))


def site_subsystem(override: str, distributor: str, sigla_of_cnpj: str = "") -> tuple[str | None, str]:
    """The subsystem of a site and where it came from: the sites file's ``subsystem`` (``site``), else the
    distributor (``distribuidora``), else the sigla found for the distributor's CNPJ in ANEEL's data."""
    if override:
        code = override.strip().upper()
        return (code if code in SUBSYSTEMS else None), "site"
    found = subsystem_for(distributor)
    if found is None and sigla_of_cnpj:
        found = subsystem_for(sigla_of_cnpj)
    return found, "distribuidora"
