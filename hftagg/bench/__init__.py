"""Benchmarks that ship with the package, so ``hftagg bench`` works from an installed wheel.

``python -m benchmarks`` (the repository's benchmark suite) runs the same code through thin
wrappers, so the command and the suite cannot measure different things.
"""
