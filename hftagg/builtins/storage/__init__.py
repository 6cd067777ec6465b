"""Storage: the embedded segment store (``store``) and the sinks that write to servers."""
