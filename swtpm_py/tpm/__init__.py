"""The TPM 2.0 core (sans-I/O). ``Tpm(platform).power_on()`` then ``tpm.execute(cmd, locality)``."""

from .core import CommandContext, MemoryStorage, Platform, StateStorage, Tpm, error_response
from . import commands as _commands  # noqa: F401,E402  (importing registers every command)

__all__ = ["Tpm", "Platform", "MemoryStorage", "StateStorage", "CommandContext", "error_response"]
