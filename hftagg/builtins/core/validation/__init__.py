"""Market-data validation: trade and quote checks, dead letters and alerts (``stages``; compiled rules in ``kernels``)."""
