"""Hardware simulator: virtual AICSS meters on pseudo-terminals speaking the real serial protocol."""
