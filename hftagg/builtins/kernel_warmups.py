"""Built-in plugin: registers the ``warm()`` of every built-in kernel module.

The modules are found by :func:`hftagg.kernels.warm_modules` (every hftagg module with a
top-level ``warm()``). Third-party plugins register their own through the same hook
(``hftagg_register_kernel_warmups``), so ``hftagg warm`` compiles their kernels too.
"""

from __future__ import annotations

import importlib

from hftagg.hookspecs import RegisterKernelWarmup, hookimpl
from hftagg.kernels import warm_modules


@hookimpl
def hftagg_register_kernel_warmups(register: RegisterKernelWarmup) -> None:
    for name in warm_modules():
        register(importlib.import_module(name).warm, name=name)
