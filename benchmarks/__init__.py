"""Reproducible benchmarks: each runs hftagg and a baseline in the same run and prints the ratio.

Run ``python -m benchmarks [NAME ...] [--json] [--quick]``. A benchmark is a module
``benchmarks/bench_<name>.py`` with a function ``run(quick: bool) -> list[Result]``.
"""
