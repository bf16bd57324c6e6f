"""TPM command handlers, one module per command family. Importing this package registers
every implemented command in :data:`swtpm_py.tpm.registry.COMMANDS`."""

from . import (audit, capability, clock, context, da, hash, hierarchy, nv, object,  # noqa: F401
               pcr, policy, pp, random, sequence, session, signing, startup, testing)
