"""Built-in plugin: registers the ``warm()`` of every hftagg module that has one
(:func:`hftagg.kernels.warm_modules`: the kernel modules, ``records.fixed``, ...).

Third-party plugins register their own through the same hook (``hftagg_register_kernel_warmups``),
so ``hftagg warm`` compiles their kernels too.
"""

from __future__ import annotations

import importlib

from hftagg.hookspecs import RegisterKernelWarmup, hookimpl
from hftagg.kernels import warm_modules


@hookimpl
def hftagg_register_kernel_warmups(register: RegisterKernelWarmup) -> None:
    for name in warm_modules():
        register(importlib.import_module(name).warm, name=name)
