"""TPM command handlers, one module per command family. Importing this package registers
every implemented command in :data:`swtpm_py.tpm.registry.COMMANDS`."""

from . import (capability, clock, hash, object, pcr, policy, random, session,  # noqa: F401
               startup, testing)
