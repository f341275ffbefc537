"""The wire contracts that every side of CDS shares: no I/O, only msgspec and cobs.

``frames`` is the serial codec between the meter and the gateway (the C firmware has its twin, tied by
``tests/vectors/frames.json``); ``mqtt`` holds the payload Structs, topics and codecs between gateways and the
backend; ``ids`` and ``timebase`` hold the identifiers and constants that must mean the same thing everywhere.
gateway, backend and sim import this package and never each other (docs/architecture.md).
"""
