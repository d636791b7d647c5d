"""``python -m portable_bp``: the same as the ``portable-bp`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
