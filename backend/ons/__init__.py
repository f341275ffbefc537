"""ONS (Operador Nacional do Sistema Elétrico): the national grid's open data pulled into InfluxDB (docs/ons.md)."""
