"""``python -m hftagg``: the same as the ``hftagg`` command."""

import sys

from hftagg.cli import main

if __name__ == "__main__":
    sys.exit(main())
