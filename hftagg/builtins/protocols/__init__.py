"""Protocol codecs (SBE, FIX, DBN) and where their definitions are found.

A relative definition path in a config (``schema = "sbe/hftagg-md.xml"``, ``dictionary =
"fix/FIX44.xml"``) is looked up in order, the first existing file winning:

1. each ``runtime.protocol_paths`` folder (default ``["protocols"]``), relative to the config file;
2. the config file's own folder;
3. the definitions shipped inside this package (package data), so an installed wheel runs the
   default config with no repository checkout.

An absolute path is used as it is. A user's own definitions, or newer versions of the built-in
ones, go in ``protocols/`` next to ``config.toml``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hftagg.config.paths import config_dir
from hftagg.errors import SchemaError

__all__ = [
    "BUILTIN_DEFINITIONS",
    "find_definition",
    "protocol_dirs",
    "search_path",
    "set_search_path",
]

#: The definitions shipped with hftagg: ``sbe/hftagg-md.xml``, ``fix/FIX44.xml``.
BUILTIN_DEFINITIONS = Path(__file__).resolve().parent
_DEFAULT_PATHS = ["protocols"]
_user_folders: tuple[Path, ...] = ()


def protocol_dirs(raw: Mapping[str, Any], config_path: Path | None) -> list[Path]:
    """The user's definition folders for a raw config: ``runtime.protocol_paths`` (relative to
    the config file's folder, or the current one without a file), then that folder itself."""
    base = config_path.resolve().parent if config_path is not None else config_dir()
    runtime = raw.get("runtime", {})
    paths = runtime.get("protocol_paths", _DEFAULT_PATHS) if isinstance(runtime, dict) else []
    if not isinstance(paths, list):
        paths = _DEFAULT_PATHS  # the config's validation reports the bad value
    return [base / p for p in paths if isinstance(p, str)] + [base]


def set_search_path(folders: Iterable[Path]) -> None:
    """Use ``folders`` (then the built-in definitions) for relative definition paths."""
    global _user_folders
    _user_folders = tuple(Path(f) for f in folders)


def search_path() -> tuple[Path, ...]:
    """Where relative definition paths are looked up, in order."""
    return (*_user_folders, BUILTIN_DEFINITIONS)


def find_definition(path: str | Path, what: str = "protocol definition") -> Path:
    """The file a definition path names; SchemaError listing where it was looked for if none.

    An absolute path is returned as it is (the loader that opens it names it if it is missing).
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return p  # used as given: opening it reports a missing file
    folders = search_path()
    for folder in folders:
        if (folder / p).is_file():
            return folder / p
    raise SchemaError(
        f"{what} {str(path)!r} not found in {', '.join(str(f) for f in folders)}; put it in one of "
        f"the first folders (runtime.protocol_paths, relative to the config file) or give an "
        f"absolute path"
    )
