"""Prometheus metrics of one backend app, on their own registry (several apps may live in one test process).

Served at ``/metrics`` in the text exposition format. Names follow Prometheus conventions: ``_total`` for
counters, ``_seconds`` for durations. The alert rules and dashboards in ``deploy/prometheus`` and
``deploy/grafana`` use these names; tests/ops checks that every name they use is still exported here.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MAX_SITE_LABELS: Final = 10_000
"""Distinct ``site`` label values one process exports; readings of any further site count under ``OTHER_SITE``.
Site ids are bounded by provisioning (a gateway's broker role confines it to its own site), so the cap is only
reached through a misconfigured broker that lets anyone publish under any site: then it bounds the series
Prometheus has to keep instead of letting a publisher create one per invented id."""
OTHER_SITE: Final = "_other"
"""Not a valid site id (ids start with a letter or digit), so it never collides with a real site."""


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
        # Children with a known, fixed label set exist from the start at 0: increase() cannot see the first
        # increment of a series that appears with it, so an alert on the first InfluxDB error would miss it.
        for kind in ("unavailable", "rejected"):
            self.write_errors.labels(kind)
        for outcome in ("ok", "error"):
            self.rollup_passes.labels(outcome)
        for outcome in ("published", "failed"):
            self.receipts.labels(outcome)
        self.site_readings = Counter("cds_ingest_site_readings_total",
                                     "Readings written to InfluxDB from MQTT, by site (the per-site rate alert)",
                                     ["site"], registry=r)
        self._sites: set[str] = set()
        # Set by the schedulers from the sync log in InfluxDB, so a replica that did not pull itself still knows
        # when any replica last pulled; 0 until a replica running the scheduler has read it (or none ran).
        self.aneel_last_sync = Gauge("cds_aneel_last_sync_timestamp_seconds",
                                     "Unix time of the last successful ANEEL pull by any replica (0 = not known)",
                                     registry=r)
        self.ons_last_sync = Gauge("cds_ons_last_sync_timestamp_seconds",
                                   "Unix time of the last successful ONS pull by any replica (0 = not known)",
                                   registry=r)

    def count_site_readings(self, site: str, n: int) -> None:
        """Add ``n`` readings written for ``site``, within the label cap (see ``MAX_SITE_LABELS``)."""
        if site not in self._sites:
            if len(self._sites) >= MAX_SITE_LABELS:
                site = OTHER_SITE
            else:
                self._sites.add(site)
        self.site_readings.labels(site).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
