"""Built-in protocol plugins: codec families (and their schemas) registered like any plugin's."""
