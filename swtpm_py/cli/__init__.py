"""``swtpm_py`` command line: ``swtpm_py socket ...`` takes swtpm's flags (REFERENCE.md §5).

Subcommands (like ``swtpm socket``): ``socket`` runs the emulator. The console script
``swtpm_py`` and ``python -m swtpm_py`` both land in :func:`main`.
"""

from __future__ import annotations

import sys

USAGE = """Usage: swtpm_py socket [options]

Run 'swtpm_py socket --help' for the options (they are swtpm's).
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point: dispatch to the subcommand; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        (sys.stdout if args else sys.stderr).write(USAGE)
        return 0 if args else 1
    if args[0] == "socket":
        from .socket_command import run

        return run(args[1:])
    sys.stderr.write(f"swtpm_py: unsupported interface '{args[0]}'\n" + USAGE)
    return 1
