"""InfluxDB, through its v1 HTTP API: the client, line protocol, the layout of retention policies and
measurements, the readings write path, the pure register maths, and the rollups and energy series kept from
the raw readings."""
