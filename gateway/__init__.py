"""CDS gateway: serial links to AICSS meters, a durable SQLite queue and the MQTT forwarder.

The wire contracts it speaks (serial frames, MQTT payloads) live in the shared ``protocol`` package; this package
holds only what runs on the Raspberry Pi.
"""
