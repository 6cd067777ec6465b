"""Built-in protocol plugins (codec families and their encode/decode stages)."""
