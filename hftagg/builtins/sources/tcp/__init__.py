"""TCP source: a framed byte stream (length-prefixed, delimited or FIX) from a peer."""
