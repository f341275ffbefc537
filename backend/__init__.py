"""CDS backend: MQTT ingest into InfluxDB, ANEEL tariffs, analytics and the REST API."""
