"""TPM command handlers, one module per command family. Importing this package registers
every implemented command in :data:`swtpm_py.tpm.registry.COMMANDS`."""

from . import (capability, clock, context, da, hash, hierarchy, nv, object, pcr,  # noqa: F401
               policy, random, sequence, session, startup, testing)
