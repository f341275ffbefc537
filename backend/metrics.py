"""Prometheus metrics of one backend app, on their own registry (several apps may live in one test process).

Served at ``/metrics`` in the text exposition format. Names follow Prometheus conventions: ``_total`` for
counters, ``_seconds`` for durations.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Every metric the backend exports, created on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter("cds_ingest_messages_total", "Uplink MQTT messages handled, by kind and outcome",
                                ["kind", "outcome"], registry=r)
        self.readings_written = Counter("cds_ingest_readings_total", "Readings written to InfluxDB, by source",
                                        ["source"], registry=r)
        self.rejected = Counter("cds_ingest_rejected_total",
                                "Rejected payloads or readings (dead-lettered), by reason", ["reason"], registry=r)
        self.write_seconds = Histogram("cds_influx_write_seconds", "Duration of successful /write requests",
                                       registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.write_errors = Counter("cds_influx_write_errors_total", "Failed /write attempts, by kind",
                                    ["kind"], registry=r)
        self.inflight = Gauge("cds_ingest_unacked_messages", "Messages received and not yet acknowledged",
                              registry=r)
        self.pending_points = Gauge("cds_ingest_pending_points", "Points waiting for the next /write",
                                    registry=r)
        self.mqtt_connected = Gauge("cds_mqtt_connected", "1 while connected to the broker", registry=r)
        self.rollup_passes = Counter("cds_rollup_passes_total", "Rollup passes, by outcome", ["outcome"],
                                     registry=r)
        self.rollup_windows = Counter("cds_rollup_windows_total", "Recomputed rollup windows, by resolution",
                                      ["resolution"], registry=r)
        self.http_errors = Counter("cds_http_errors_total", "HTTP answers with an error status, by status",
                                   ["status"], registry=r)
        self.dead_letter_failures = Counter("cds_dead_letter_publish_failures_total",
                                            "Dead letters that could not be published", registry=r)
        self.receipts = Counter("cds_ingest_receipts_total",
                                "Receipt messages to gateways, by outcome (published, failed)", ["outcome"], registry=r)
        self.receipted = Counter("cds_ingest_receipted_batches_total",
                                 "Uplink batches named in receipts, by outcome (stored, dead_lettered)", ["outcome"],
                                 registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
