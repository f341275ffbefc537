"""Hardware simulator: virtual AICSS meters on pseudo-terminals speaking the real serial protocol.

``sim.loads`` (household loads), ``sim.meter`` (the sans-IO meter model), ``sim.faults`` (link faults),
``sim.port`` / ``sim.runner`` (ptys and the service thread), ``python -m sim`` (CLI); see docs/simulator.md.
Kept empty on purpose: importing ``sim`` loads no pty or serial machinery.
"""
