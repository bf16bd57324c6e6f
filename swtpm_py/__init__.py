"""swtpm_py: a pure-Python TPM 2.0 emulator, a drop-in for ``swtpm socket``."""

__version__ = "0.1.0"
