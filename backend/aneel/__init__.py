"""ANEEL's open data: the CKAN client, typed records, tariff and bandeira books, postos tarifários, the sites'
supply contracts, the InfluxDB copy of the data and the scheduled pull."""
