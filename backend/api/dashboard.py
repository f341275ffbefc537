"""``/painel``: the pt-BR dashboard, static HTML/JS/CSS served from ``backend/dashboard``, and the third-party
browser assets it and ``/docs`` use, served from the Python packages that ship them.

The page asks for a login and then calls the REST API with the token, so the routers are public and need no
state of the app. Nothing is loaded from a CDN: a dashboard on a local network, or ``/docs`` on a laptop offline,
must work without the internet, so Plotly.js comes from the ``plotly`` package's ``package_data`` and Swagger UI
(5.x, which reads OpenAPI 3.1) from the ``swagger-ui-py`` package's ``static`` folder (both pinned in pyproject's
backend extra), never copied into this repository. The packages are found, not imported: only their files are used.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Any, Final

from litestar import Request, Response
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from backend.api.openapi import ErrorOut


def _package_dir(name: str) -> Path:
    """The folder of an installed package, without running its ``__init__``."""
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name!r} is not installed: pip install -e '.[backend]'")
    return Path(next(iter(spec.submodule_search_locations)))


DASHBOARD_DIR: Final = Path(__file__).resolve().parent.parent / "dashboard"
PLOTLY_DIR: Final = _package_dir("plotly") / "package_data"
"""Holds ``plotly.min.js``, the self-contained Plotly.js bundle the ``plotly`` wheel ships for offline use."""
SWAGGER_UI_DIR: Final = _package_dir("swagger_ui") / "static"
VENDOR_PATH: Final = "/vendor"
SWAGGER_UI_URL: Final = f"{VENDOR_PATH}/swagger-ui"
# The assets change only with the pinned package versions, so browsers may keep them for a day.
_VENDOR_CACHE: Final = CacheControlHeader(max_age=86_400, public=True)


def _no_such_file(request: Request[Any, Any, Any], exc: ValueError) -> Response[ErrorOut]:
    # A path the file system cannot even represent (a NUL byte) names no file of the dashboard.
    return Response(ErrorOut(status_code=404, detail="Recurso não encontrado."), status_code=404)


dashboard_router = create_static_files_router(
    path="/painel", directories=[DASHBOARD_DIR], html_mode=True, opt={"public": True}, name="painel",
    include_in_schema=False, exception_handlers={ValueError: _no_such_file})
plotly_router = create_static_files_router(
    path=f"{VENDOR_PATH}/plotly", directories=[PLOTLY_DIR], opt={"public": True}, name="vendor-plotly",
    include_in_schema=False, cache_control=_VENDOR_CACHE, exception_handlers={ValueError: _no_such_file})
swagger_ui_router = create_static_files_router(
    path=SWAGGER_UI_URL, directories=[SWAGGER_UI_DIR], opt={"public": True}, name="vendor-swagger-ui",
    include_in_schema=False, cache_control=_VENDOR_CACHE, exception_handlers={ValueError: _no_such_file})
