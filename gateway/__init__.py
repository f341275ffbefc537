"""CDS gateway: serial links to AICSS meters, a durable SQLite queue and the MQTT forwarder.

Kept import-light: ``gateway.frames`` (serial codec) and ``gateway.contracts`` (MQTT payloads) need only msgspec
and cobs, so the backend and the simulator import them without pulling in pyserial or paho.
"""
