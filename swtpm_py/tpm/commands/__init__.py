"""TPM command handlers, one module per command family. Importing this package registers
every implemented command in :data:`swtpm_py.tpm.registry.COMMANDS`."""

from . import (asym, attest, audit, capability, clock, context, credential, da,  # noqa: F401
               duplication, ecc, hash, hierarchy, nv, object, pcr, policy, pp, random, sequence,
               session, signing, startup, symmetric, testing)
