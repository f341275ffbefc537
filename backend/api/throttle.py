"""Login throttling: failed logins slow down guessing per user and per client address.

Sans-IO: the clock is an argument, so the rules are tested without waiting. From the ``free``-th failure of one
key (a user name, or an address) on, each failure locks that key out, ``base_s`` doubling up to ``max_s``;
while locked, a login is answered 429 with ``Retry-After`` *before* the password is checked, so a correct guess
made during a lock-out teaches the attacker nothing and costs no scrypt work. A success clears the user's key
(not the address's: one good password must not reset a spraying address). Addresses get more free failures than
users because many people may share one (a NAT, a condominium's network).

State is per replica and in memory: with N replicas an attacker gets at most N times the budget, and a restart
forgives everyone. Keys are bounded (oldest first out) so that invented user names cannot grow memory.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

MAX_KEYS: Final = 50_000


@dataclass(slots=True)
class _Record:
    failures: int = 0
    locked_until: float = 0.0


class LoginThrottle:
    """Failure accounting for logins; ``retry_after`` says whether (and how long) a login must wait."""

    def __init__(self, *, user_free: int = 5, address_free: int = 30, base_s: float = 1.0,
                 max_s: float = 900.0) -> None:
        self.user_free = user_free
        self.address_free = address_free
        self.base_s = base_s
        self.max_s = max_s
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, user: str, address: str, now: float) -> int:
        """Seconds to wait before this login may be tried (0 = go ahead), rounded up."""
        wait = max((r.locked_until - now for r in (self._records.get(k) for k in _keys(user, address)) if r),
                   default=0.0)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, user: str, address: str, now: float) -> None:
        for key, free in zip(_keys(user, address), (self.user_free, self.address_free), strict=True):
            record = self._records.pop(key, None) or _Record()
            record.failures += 1
            if record.failures >= free:
                lock = min(self.max_s, self.base_s * 2.0 ** min(record.failures - free, 40))
                record.locked_until = now + lock
            self._records[key] = record  # most recent last: the oldest go first when the table is full
        while len(self._records) > MAX_KEYS:
            self._records.popitem(last=False)

    def succeeded(self, user: str) -> None:
        self._records.pop(_keys(user, "")[0], None)


def _keys(user: str, address: str) -> tuple[str, str]:
    # Prefixed so that a user named like an address cannot share its record.
    return f"u:{user.casefold()}", f"a:{address}"
