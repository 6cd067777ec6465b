"""Regenerate the diagrams in assets/ from code (tests/test_assets.py fails when one is stale).

    .venv/bin/python assets/generate.py           # rewrite what changed
    .venv/bin/python assets/generate.py --check   # exit 1 naming the stale files

architecture.*: hftagg's parts, with the hooks and built-in stage types registered now.
pipeline.*: the default pipeline, from the repository's config.toml and plugins/ (the same as
``hftagg graph -c config.toml``), without environment or Consul layers.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hftagg.runtime.draw import asset_texts  # noqa: E402


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, text in asset_texts(ROOT).items():
        path = ROOT / "assets" / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
            if not check:
                path.write_text(text, encoding="utf-8")
    verb = "stale" if check else "rewrote"
    print(f"assets: {verb}: {', '.join(stale)}" if stale else "assets: up to date")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
