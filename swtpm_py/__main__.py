"""``python -m swtpm_py socket ...``: the same as the ``swtpm_py`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
