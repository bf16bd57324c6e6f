"""TPM command handlers, one module per command family. Importing this package registers
every implemented command in :data:`swtpm_py.tpm.registry.COMMANDS`."""

from . import clock, hash, pcr, random, startup  # noqa: F401
