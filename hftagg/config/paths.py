"""Every path in a config file is relative to that file.

``assemble`` records the folder of the config it reads (:func:`set_config_dir`); a stage turns a
path parameter into a file with :func:`config_relative`: an absolute path as given, a relative
one (a glob too) joined to that folder -- the current folder when there is no file (built-in
defaults). Plugin folders (``runtime.plugin_paths``) and protocol definition folders
(``runtime.protocol_paths``) follow the same rule.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["config_dir", "config_relative", "set_config_dir"]

_folder: Path | None = None


def set_config_dir(config_path: str | os.PathLike | None) -> None:
    """Make relative paths relative to ``config_path``'s folder (None: the current folder)."""
    global _folder
    _folder = Path(config_path).resolve().parent if config_path is not None else None


def config_dir() -> Path:
    """The folder relative config paths are joined to."""
    return _folder if _folder is not None else Path.cwd()


def config_relative(path: str | os.PathLike) -> Path:
    """``path`` (from a config) as a usable path: absolute as given, else under :func:`config_dir`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else config_dir() / p
