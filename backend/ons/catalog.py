"""A dataset's CKAN resources into the yearly files to read (sans-IO: ``package_show``'s result in, files out).

ONS lists every year of a dataset as up to three resources sharing one name (``Balanco_Energia_Subsistema-2025``
as CSV, PARQUET and XLSX), plus data dictionaries (JSON, PDF), the occasional stray test resource and, sometimes,
the same file twice under two ids. The S3 folder is not the slug and file names are irregular
(``CMO_SEMIHORARIO_2026.csv`` where ``CMO_SEMI_HORARIO`` would give NoSuchKey), so the URL is always taken from
the portal, never built. This module picks one file per year (and per month, for the datasets ONS splits by
month): Parquet when offered and preferred, else CSV; XLSX, PDF and JSON are never read.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from backend.ons.datasets import Dataset
from backend.ons.files import FileFormat

_YEAR_RE: Final = re.compile(r"[_-]((?:19|20)\d\d)(?:[_-](0[1-9]|1[0-2]))?\.(csv|parquet)$", re.IGNORECASE)


class Resource(msgspec.Struct, frozen=True):
    """One CKAN resource as ONS lists it (every field may be missing or null)."""

    id: str = ""
    name: str = ""
    format: str = ""
    url: str = ""
    size: int | None = None
    created: str | None = None
    last_modified: str | None = None


class DataFile(msgspec.Struct, frozen=True):
    """One yearly (or monthly) file chosen for reading."""

    dataset: str
    year: int
    month: int
    """0 for a yearly file."""
    format: FileFormat
    url: str
    name: str
    modified: str
    """The portal's ``last_modified`` (or ``created`` when null): naive UTC, informative only."""

    @property
    def key(self) -> str:
        """The S3 key (URL path without the leading slash): the file's identity in CDS's bookkeeping."""
        return urllib.parse.urlsplit(self.url).path.lstrip("/")


def resources_of(package: Mapping[str, Any]) -> list[Resource]:
    """The resources of a ``package_show`` result; malformed entries are skipped."""
    out: list[Resource] = []
    for raw in package.get("resources") or []:
        if not isinstance(raw, Mapping):
            continue
        size = raw.get("size")
        out.append(Resource(
            id=str(raw.get("id") or ""), name=str(raw.get("name") or ""), format=str(raw.get("format") or ""),
            url=str(raw.get("url") or "").strip(), size=size if isinstance(size, int) else None,
            created=raw.get("created") if isinstance(raw.get("created"), str) else None,
            last_modified=raw.get("last_modified") if isinstance(raw.get("last_modified"), str) else None))
    return out


def _period(res: Resource) -> tuple[int, int, FileFormat] | None:
    path = urllib.parse.urlsplit(res.url).path
    match = _YEAR_RE.search(path.rsplit("/", 1)[-1])
    if match is None:
        return None
    ext = match.group(3).lower()
    declared = res.format.strip().lower()
    if declared and declared != ext:  # a resource whose declared format and file disagree is not trusted
        return None
    return int(match.group(1)), int(match.group(2) or 0), "parquet" if ext == "parquet" else "csv"


def choose_files(dataset: Dataset, resources: Iterable[Resource], *, first_year: int,
                 prefer: FileFormat = "parquet") -> list[DataFile]:
    """One file per period from ``first_year`` on, oldest first; duplicates (same URL) are listed once."""
    chosen: dict[tuple[int, int], DataFile] = {}
    seen: set[str] = set()
    for res in resources:
        if not res.url.lower().startswith(("http://", "https://")) or res.url in seen:
            continue
        seen.add(res.url)
        period = _period(res)
        if period is None or period[0] < first_year:
            continue
        year, month, fmt = period
        candidate = DataFile(dataset=dataset.key, year=year, month=month, format=fmt, url=res.url,
                             name=res.name or res.url.rsplit("/", 1)[-1],
                             modified=res.last_modified or res.created or "")
        current = chosen.get((year, month))
        if current is None or (current.format != prefer and fmt == prefer):
            chosen[(year, month)] = candidate
    return [chosen[k] for k in sorted(chosen)]
