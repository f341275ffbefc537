"""The local dev stack: everything that runs CDS on one machine without hardware or internet.

``services`` starts real Mosquitto and InfluxDB processes (for tests, benchmarks and the launcher),
``aneel_fake`` serves ANEEL's CKAN API in its real shapes, and ``launcher`` (``python -m devstack``) brings up
the whole system with simulated meters. It treats the product as a black box: it starts the gateway and the
backend as processes and talks to them only over their public interfaces, so it imports ``protocol`` and
``sim`` but never ``gateway`` or ``backend``.
"""
