"""``/painel``: the pt-BR dashboard, static HTML/JS/CSS served from ``backend/dashboard``.

The page asks for a login and then calls the REST API with the token, so the router itself is public and
needs no state of the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from litestar.static_files import create_static_files_router

DASHBOARD_DIR: Final = Path(__file__).resolve().parent.parent / "dashboard"

dashboard_router = create_static_files_router(
    path="/painel", directories=[DASHBOARD_DIR], html_mode=True, opt={"public": True}, name="painel",
    include_in_schema=False)
