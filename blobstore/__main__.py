"""The ``blobstore`` command-line tool (issue 3 builds its verbs)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``blobstore`` tool."""
    print("blobstore: no verbs are implemented yet (see issue 3)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
