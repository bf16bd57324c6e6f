"""TPM command handlers, one module per command family. Importing this package registers
every implemented command in :data:`swtpm_py.tpm.registry.COMMANDS`."""

from . import (asym, audit, capability, clock, context, da, ecc, hash, hierarchy,  # noqa: F401
               nv, object, pcr, policy, pp, random, sequence, session, signing, startup,
               symmetric, testing)
