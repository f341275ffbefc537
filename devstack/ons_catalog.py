"""The fake ONS portal's catalogue: the three datasets, their resources as ONS lists them, and the CKAN actions.

Each dataset lists one resource per year and format (CSV, PARQUET, XLSX under one name), its data dictionaries
(JSON, PDF), a stray test resource, one file listed twice under two ids, and ``last_modified: null`` on years before
2012, as the research notes record (docs/ons.md). CKAN's envelope and error shapes: ``package_show`` answers 409
without ``id`` and 404 for an unknown one, ``datastore_search`` 404 (ONS serves files, not a DataStore), an unknown
action 400 with a JSON string. :mod:`devstack.ons_fake` serves this over HTTP with the files.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from devstack.ons_files import Revisions, Table, balance_table, cmo_table, load_curve_table
from devstack.ons_model import SinModel

HELP: Final = "https://dados.ons.org.br/api/3/action/help_show?name="


@dataclass(frozen=True)
class Package:
    key: str
    slug: str
    title: str
    folder: str
    stem: str
    """File name without year and extension."""
    resource_name: str
    first_year: int
    parquet_from: int
    make: Callable[[SinModel, int, dt.date, Revisions], Table]


PACKAGES: Final = (
    Package("balanco", "balanco-energia-subsistema", "Balanço de Energia nos Subsistemas",
            "balanco_energia_subsistema_ho", "BALANCO_ENERGIA_SUBSISTEMA", "Balanco_Energia_Subsistema", 2000, 2000,
            balance_table),
    Package("carga", "curva-carga", "Curva de Carga Horária", "curva-carga-ho", "CURVA_CARGA", "Curva_Carga", 2000,
            2000, load_curve_table),
    Package("cmo", "cmo-semi-horario", "Custo Marginal de Operação Semi-horário", "cmo_tm", "CMO_SEMIHORARIO",
            "CMO_Semihorario", 2020, 2024, cmo_table),
)


def package(key: str) -> Package:
    return next(p for p in PACKAGES if p.key == key)


def years(pkg: Package, until: dt.date) -> range:
    return range(pkg.first_year, until.year + 1)


def resources(pkg: Package, url: str, until: dt.date) -> list[dict[str, Any]]:
    """The package's resources as ONS lists them (see the module docstring)."""
    base = f"{url}/dataset/{pkg.folder}"
    out: list[dict[str, Any]] = []
    for year in years(pkg, until):
        created = f"{max(year, 2018)}-05-02T12:00:00.000000"
        modified = None if year < 2012 else f"{min(year + 1, until.year)}-01-02T15:00:51.691000"
        if year == until.year:
            modified = f"{until.isoformat()}T15:00:51.691000"
        formats = ["CSV", "XLSX"] + (["PARQUET"] if year >= pkg.parquet_from else [])
        for fmt in formats:
            url = f"{base}/{pkg.stem}_{year}.{fmt.lower()}"
            out.append({"id": str(uuid.uuid5(uuid.NAMESPACE_URL, url)), "name": f"{pkg.resource_name}-{year}",
                        "format": fmt, "url": url, "size": None, "created": created, "last_modified": modified,
                        "metadata_modified": modified or created, "package_id": pkg.slug})
    dup = dict(out[-3], id=str(uuid.uuid5(uuid.NAMESPACE_URL, "dup" + out[-3]["url"])))
    out.append(dup)  # the same file listed twice, as ONS does
    out.append({"id": str(uuid.uuid5(uuid.NAMESPACE_URL, base + "dic")), "name": "Dicionário de Dados Json",
                "format": "JSON", "url": f"{base}/DicionarioDados_{pkg.resource_name}.json", "size": 5120,
                "created": "2023-05-02T12:00:00.000000", "last_modified": None})
    out.append({"id": str(uuid.uuid5(uuid.NAMESPACE_URL, base + "pdf")), "name": "Dicionário de Dados",
                "format": "PDF", "url": f"{base}/DicionarioDados_{pkg.resource_name}.pdf", "size": 120000,
                "created": "2023-05-02T12:00:00.000000", "last_modified": None})
    out.append({"id": str(uuid.uuid5(uuid.NAMESPACE_URL, base + "stray")),
                "name": "Redshift_Cargaverificada-teste_titulo", "format": "CSV",
                "url": f"{base}/teste_titulo.csv", "size": 10, "created": "2023-03-01T10:00:00.000000",
                "last_modified": None})
    return out


def package_dict(slug: str, pkg: Package, url: str, until: dt.date) -> dict[str, Any]:
    listed = resources(pkg, url, until)
    return {"name": slug, "title": pkg.title, "license_title": "Creative Commons Atribuição",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, slug)), "num_resources": len(listed),
            "extras": [{"key": "Schedule de Atualização", "value": "Diariamento, as 12h e 19h"}],
            "resources": listed}


def ckan(action: str, params: dict[str, str], *, slugs: dict[str, str], fillers: int, url: str,
         until: dt.date) -> tuple[int, Any]:
    """One CKAN action of the portal: ``slugs`` maps each current slug to its package key."""

    def show(slug: str) -> dict[str, Any]:
        return package_dict(slug, package(slugs[slug]), url, until)

    if action == "package_show":
        if not params.get("id"):
            return 409, error(action, {"id": ["Missing value"], "__type": "Validation Error"})
        key = slugs.get(params["id"])
        if key is None:
            return 404, error(action, {"message": "Not found", "__type": "Not Found Error"})
        return 200, _ok(action, show(params["id"]))
    if action == "package_list":
        return 200, _ok(action, sorted(slugs))
    if action == "package_search":
        try:
            rows, start = min(int(params.get("rows", 10)), 1000), int(params.get("start", 0))
        except ValueError:
            return 409, error(action, {"rows": ["Invalid integer"], "__type": "Validation Error"})
        q = params.get("q", "").casefold()
        others = [f"{s}-historico-{i:03d}" for s in sorted(slugs) for i in range(fillers)]
        found = [s for s in others if q in s] + \
            [s for s in sorted(slugs) if q in s or q in package(slugs[s]).title.casefold()]
        page = [show(s) if s in slugs else
                {"name": s, "title": s, "num_resources": 0, "resources": []} for s in found[start:start + rows]]
        return 200, _ok(action, {"count": len(found), "results": page, "sort": "score desc, metadata_modified desc",
                                 "facets": {}, "search_facets": {}})
    if action == "datastore_search":
        rid = params.get("resource_id", "")
        return 404, error(action, {"message": f'Not found: Resource "{rid}" was not found.',
                                    "__type": "Not Found Error"})
    return 400, f"Bad request - Action name not known: {action}"


def _ok(action: str, result: Any) -> dict[str, Any]:
    return {"help": HELP + action, "success": True, "result": result}


def error(action: str, detail: dict[str, Any]) -> dict[str, Any]:
    """CKAN's error envelope."""
    return {"help": HELP + action, "success": False, "error": detail}
