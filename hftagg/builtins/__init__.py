"""Built-in plugins: ordinary pluggy plugins, registered through the same hooks as third-party ones.

One package per feature, grouped by kind (``sources/``, ``protocols/``, ``core/``,
``delivery/``), plus ``records`` for the schema catalog. A feature package holds its stages,
kernels, codec and definitions; every module in it that implements a hook (``@hookimpl``) is a
plugin, so adding one needs no list to edit.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path

__all__ = ["builtin_plugin_modules"]

_HERE = Path(__file__).parent


def _implements_hooks(path: Path) -> bool:
    """Whether a module declares hook implementations (read as text: nothing is imported)."""
    try:
        return "@hookimpl" in path.read_text(encoding="utf-8")
    except OSError:
        return False


def _walk(folder: Path, prefix: str) -> list[str]:
    names = []
    for info in sorted(pkgutil.iter_modules([str(folder)]), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        name = f"{prefix}.{info.name}"
        if info.ispkg:
            if _implements_hooks(folder / info.name / "__init__.py"):
                names.append(name)
            names.extend(_walk(folder / info.name, name))
        elif _implements_hooks(folder / f"{info.name}.py"):
            names.append(name)
    return names


def builtin_plugin_modules() -> list[str]:
    """Dotted names of every built-in plugin module, in a stable order (the catalog first)."""
    names = _walk(_HERE, __name__)
    # schemas first: stage types may refer to them
    return sorted(names, key=lambda n: (n != f"{__name__}.records", n))
