"""Indicators: EMA, SMA/WMA, RSI, ATR, VWAPs, z-score, volatility, OLS (one table of stages, ``stages.INDICATORS``; kernels in ``ema``, ``rolling``, ``kernels``)."""
