"""TPM command handlers, one module per command family. Importing this package registers
every implemented command in :data:`swtpm_py.tpm.registry.COMMANDS`."""

from . import (capability, clock, hash, hierarchy, object, pcr, policy, random,  # noqa: F401
               sequence, session, startup, testing)
