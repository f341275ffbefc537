"""``python -m backend health-check``: a running deployment checked end to end (report.py, probe.py)."""
