"""Pre-trade risk checks and positions (``stages``; compiled checks in ``kernels``)."""
