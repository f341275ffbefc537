"""From MQTT to InfluxDB: the bridge (paho, manual acks), validation into typed readings, the ingest service
that acknowledges a message only after InfluxDB accepted it, session adoption between replicas, and the
registry and fleet view of gateways and meters."""
