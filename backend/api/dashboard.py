"""``/painel``: the pt-BR dashboard, static HTML/JS/CSS served from ``backend/dashboard``.

The page asks for a login and then calls the REST API with the token, so the router itself is public and
needs no state of the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from litestar import Request, Response
from litestar.static_files import create_static_files_router

DASHBOARD_DIR: Final = Path(__file__).resolve().parent.parent / "dashboard"

def _no_such_file(request: Request[Any, Any, Any], exc: ValueError) -> Response[dict[str, Any]]:
    # A path the file system cannot even represent (a NUL byte) names no file of the dashboard.
    return Response({"status_code": 404, "detail": "Recurso não encontrado."}, status_code=404)


dashboard_router = create_static_files_router(
    path="/painel", directories=[DASHBOARD_DIR], html_mode=True, opt={"public": True}, name="painel",
    include_in_schema=False, exception_handlers={ValueError: _no_such_file})
