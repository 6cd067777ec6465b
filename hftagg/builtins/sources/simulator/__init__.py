"""The built-in market simulator source (``stages``; the compiled event generator in ``kernels``)."""
