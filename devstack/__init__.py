"""The local dev stack: everything that runs CDS on one machine without hardware or internet.

``mosquitto`` and ``influxdb`` start real Mosquitto and InfluxDB processes (for tests, benchmarks and the
launcher) on the process lifecycle of ``processes``; ``aneel_fake`` serves ANEEL's CKAN API in its real shapes,
seeded with the rows of ``aneel_rows``; and ``launcher`` (``python -m devstack``) brings up the whole system with
simulated meters, secured as deployed (``security``: the broker's and InfluxDB's users, the secrets, owner-only
files) and checked by ``smoke`` (``--smoke``). It treats the product as a black box: it starts the gateway and
the backend as processes and talks to them only over their public interfaces, so it imports ``protocol`` and
``sim`` but never ``gateway`` or ``backend``.
"""
