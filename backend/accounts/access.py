"""What one caller may see and do: a global role, or a role per site.

Two kinds of caller exist. Bootstrap users (``BACKEND_USERS``) and tokens minted by tooling carry a *global*
role — viewer, operator or admin over every site, as before tenancy existed. Users of the accounts store are
either global admins or hold *grants*: site id → ``viewer`` or ``operator``. A caller with grants sees exactly
those sites and nothing else; the API turns every site outside them into a 404, the same answer as for a site that
does not exist, so a grant list never reveals the other tenants (docs/api.md, "Sites e permissões").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

import msgspec

Role = Literal["viewer", "operator", "admin"]
SiteRole = Literal["viewer", "operator"]
ROLE_RANK: Final[dict[str, int]] = {"viewer": 1, "operator": 2, "admin": 3}
"""viewer < operator < admin: a guard asking for a role admits every role ranked at least as high."""


class Caller(msgspec.Struct, frozen=True):
    """The holder of a verified token, as of the latest accounts data this replica has."""

    username: str
    role: Role | None
    """Global role (every site); None for a user who holds site grants only."""
    grants: dict[str, SiteRole] = {}
    """Site id → role there; empty for global callers."""

    @property
    def sees_all(self) -> bool:
        return self.role is not None

    def can_see(self, site: str) -> bool:
        return self.role is not None or site in self.grants

    def can_operate(self, site: str) -> bool:
        """Post readings of ``site`` or configure its meters."""
        if self.role is not None:
            return ROLE_RANK[self.role] >= ROLE_RANK["operator"]
        return self.grants.get(site) == "operator"

    def has(self, role: Role) -> bool:
        """Whether a guard asking for ``role`` lets this caller reach the handler at all; the handler then checks
        the site. Only a global admin passes an admin guard: grants never reach admin endpoints."""
        if self.role is not None:
            return ROLE_RANK[self.role] >= ROLE_RANK[role]
        if role == "admin":
            return False
        return any(ROLE_RANK[r] >= ROLE_RANK[role] for r in self.grants.values())

    def visible(self) -> frozenset[str] | None:
        """The sites this caller may see; None means every site."""
        return None if self.role is not None else frozenset(self.grants)

    def filter(self, sites: Iterable[str]) -> list[str]:
        """``sites`` without those the caller may not see, order kept."""
        return [s for s in sites if self.can_see(s)]
