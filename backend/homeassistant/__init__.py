"""The Home Assistant bridge: one site's meters as MQTT-discovered sensors of a household's Home Assistant.

``python -m backend homeassistant --site SITE`` (docs/homeassistant.md). Shaped like the gateway: a sans-IO core
(:mod:`.discovery` builds the discovery configs, :mod:`.state` reduces readings to what Home Assistant shows,
:mod:`.site` ties them to topics and decides what to publish when) and a thin paho shell (:mod:`.bridge`).
Optional and off by default: nothing runs unless an operator lists the site in the broker's gateway list and
starts the bridge. It is a sibling of the ingest, not a part of it: it reads the readings through a plain
subscription of its own, so neither can slow, block or lose anything of the other.
"""
