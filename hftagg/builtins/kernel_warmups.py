"""Built-in plugin: registers the ``warm()`` of every kernel module in :mod:`hftagg.kernels`.

Third-party plugins register their own through the same hook (``hftagg_register_kernel_warmups``),
so ``hftagg warm`` compiles their kernels too.
"""

from __future__ import annotations

import importlib
import pkgutil

import hftagg.kernels
from hftagg.hookspecs import RegisterKernelWarmup, hookimpl


@hookimpl
def hftagg_register_kernel_warmups(register: RegisterKernelWarmup) -> None:
    names = sorted(m.name for m in pkgutil.iter_modules(hftagg.kernels.__path__))
    for name in sorted(names, key=lambda n: n != "ema"):  # ema first, as warm_all does
        module = importlib.import_module(f"hftagg.kernels.{name}")
        warm = getattr(module, "warm", None)
        if callable(warm):
            register(warm, name=f"hftagg.kernels.{name}")
