"""TPM command handlers, one module per command family. Importing this package registers
every implemented command in :data:`swtpm_py.tpm.registry.COMMANDS`."""

from . import (capability, clock, context, hash, hierarchy, object, pcr, policy,  # noqa: F401
               random, sequence, session, startup, testing)
