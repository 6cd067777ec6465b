"""Built-in plugins: ordinary pluggy plugins, registered through the same hooks as third-party ones.

Grouped by kind in sub-packages (``sources``, ``core``, ``delivery``, ...) plus ``records`` for
the schema catalog. Every module found here is a plugin; adding one needs no list to edit.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

__all__ = ["builtin_plugin_modules"]


def builtin_plugin_modules() -> list[str]:
    """Dotted names of every built-in plugin module, in a stable order."""
    here = Path(__file__).parent
    names = []
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        if info.ispkg:
            for sub in sorted(pkgutil.iter_modules([str(here / info.name)]), key=lambda m: m.name):
                if not sub.name.startswith("_"):
                    names.append(f"{__name__}.{info.name}.{sub.name}")
        else:
            names.append(f"{__name__}.{info.name}")
    # schemas first: stage types may refer to them
    return sorted(names, key=lambda n: (n != f"{__name__}.records", n))
