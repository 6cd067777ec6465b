"""Bars: time, tick and volume bars and cascades (``stages``; compiled consolidators in ``kernels``)."""
