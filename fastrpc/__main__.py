"""``python -m fastrpc``: the command line (:mod:`fastrpc.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
