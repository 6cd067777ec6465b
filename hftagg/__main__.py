import sys

from hftagg.cli import main

sys.exit(main())
