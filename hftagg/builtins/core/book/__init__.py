"""Order books: L2 (market-by-price) and L3 (market-by-order) stages (``stages``; compiled books in ``kernels`` and ``mbo``)."""
