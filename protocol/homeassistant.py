"""Topics and broker identities of the Home Assistant bridge (docs/homeassistant.md).

Why this is a contract and lives here: three parties must agree on these strings and none of them may import
another. The bridge (``backend/homeassistant/``) publishes on them, the broker's access rules
(``backend/ingest/broker_users.py``, a sibling layer the bridge must not import) grant exactly them, and Home
Assistant is configured with them by a person reading docs/homeassistant.md. A topic that drifts in one place
would show up as a silent SUBACK 0x87 or a refused PUBLISH in another.

Why a discovery prefix per site, ``<root>/<site>``: Home Assistant subscribes to ``<prefix>/+/+/config`` and
``<prefix>/+/+/+/config``, and Mosquitto's dynamic-security plugin grants a SUBSCRIBE only when one of the
client's ACL filters covers the whole requested filter. With the shared prefix ``homeassistant`` a household's
Home Assistant would need read access to every site's discovery topics (or get nothing at all); with
``homeassistant/<site>`` its role names its own subtree and nothing else. Mosquitto 2.0.11 ACLs take no
``%u``/``%c`` substitution, so every site gets literal rules of its own.

Layout (``{root}`` is ``homeassistant`` unless ``BACKEND_HOMEASSISTANT_DISCOVERY_ROOT`` says otherwise)::

    {root}/{site}/sensor/cds_{device}/{sensor}/config   discovery, retained, the bridge -> Home Assistant
    {root}/{site}/status                                Home Assistant's birth and last will ("online"/"offline")
    cds-ha/v1/{site}/{device}/state                     one JSON state per meter, retained, the bridge -> HA
    cds-ha/v1/{site}/bridge                             the bridge's availability ("online"/"offline", last will)

Identities: the bridge connects as ``homeassistant-bridge@<site>`` with client id ``cds-habridge-<site>``, Home
Assistant as ``homeassistant@<site>`` with client id ``cds-ha-<site>``. The ``@`` keeps them apart from gateway
users (``<site>/<gateway>``, files ``<site>.<gateway>``) and from service users (``[A-Za-z0-9_-]``); both are
bound to their client id because Mosquitto 2.0.11 hands a session to whoever presents its client id, whatever
the user, and an unbound user could take over a backend replica's session.
"""

from __future__ import annotations

import re
from typing import Final

DEFAULT_DISCOVERY_ROOT: Final = "homeassistant"
"""Home Assistant's own default prefix; the per-site prefix is this plus ``/<site>``."""
DISCOVERY_ROOT_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64}){0,3}\Z"
"""A root: plain topic levels, no wildcard, no ``$`` (the broker's own topics) and no empty level."""
STATE_ROOT: Final = "cds-ha/v1"
"""Outside ``cds/v1`` on purpose: the backend subscribes to ``cds/v1/+/+/status``, which a topic such as
``cds/v1/<site>/bridge/status`` would match."""
COMPONENT: Final = "sensor"
ONLINE: Final = "online"
OFFLINE: Final = "offline"


def is_discovery_root(root: str) -> bool:
    return re.match(DISCOVERY_ROOT_PATTERN, root) is not None


def discovery_prefix(root: str, site: str) -> str:
    """What Home Assistant's ``discovery_prefix`` must be set to for ``site``."""
    return f"{root}/{site}"


def config_topic(root: str, site: str, device: str, sensor: str) -> str:
    """Discovery topic of one sensor of one meter (node id ``cds_<device>``, object id the sensor's key)."""
    return f"{discovery_prefix(root, site)}/{COMPONENT}/cds_{device}/{sensor}/config"


def config_filter(root: str, site: str) -> str:
    """Every discovery topic the bridge of ``site`` may publish."""
    return f"{discovery_prefix(root, site)}/{COMPONENT}/+/+/config"


def birth_topic(root: str, site: str) -> str:
    """Home Assistant's birth and will topic (its MQTT option "Birth message topic") for ``site``."""
    return f"{discovery_prefix(root, site)}/status"


def state_topic(site: str, device: str) -> str:
    return f"{STATE_ROOT}/{site}/{device}/state"


def bridge_status_topic(site: str) -> str:
    return f"{STATE_ROOT}/{site}/bridge"


def site_state_filter(site: str) -> str:
    """Everything the bridge of ``site`` publishes outside the discovery prefix."""
    return f"{STATE_ROOT}/{site}/#"


def bridge_username(site: str) -> str:
    return f"homeassistant-bridge@{site}"


def bridge_client_id(site: str) -> str:
    return f"cds-habridge-{site}"


def ha_username(site: str) -> str:
    return f"homeassistant@{site}"


def ha_client_id(site: str) -> str:
    return f"cds-ha-{site}"
