"""``python -m backend rollout``: replace backend replicas one at a time, rolling back on its own (plan.py, run.py)."""
