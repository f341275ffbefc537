"""The pieces of ``bench/chaos.py``, one concept per module.

``stack`` (Mosquitto, InfluxDB, two backend replicas and the gateway as real processes), ``avrmeter`` (the real
firmware in simavr behind a relay pty), ``fleet`` (all meters and their ground truth), ``faults`` (the seeded
schedule and its execution), ``tap`` (what the broker carried), ``watch`` (the gateway's counters and the
processes' memory), ``reconcile`` (readings against InfluxDB), ``energy`` (registers against the consumption API)
and ``report`` (text, JSON and the verdict).
"""
