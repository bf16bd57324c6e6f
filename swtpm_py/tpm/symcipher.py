"""Block ciphers for the TPM: AES in CFB mode (Part 1 §11.4.6 "Symmetric Encryption"), the
mode the TPM uses to protect sensitive areas (Part 1 "Protected Storage") and parameters.

The cipher itself is ``cryptography``'s; this module only maps TPM algorithm identifiers onto it.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 43 keeps CFB in its "decrepit" module
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB  # type: ignore[assignment]

from .constants import ALG

#: Block size (octets) of each implemented block cipher.
BLOCK_SIZES: dict[int, int] = {ALG.AES: 16}


def cfb_encrypt(alg: int, key: bytes, iv: bytes, data: bytes) -> bytes:
    """Encrypt ``data`` with block cipher ``alg`` in full-block CFB mode (Part 1 §11.4.6.3:
    CFB with a feedback size of the block size; the last block may be partial)."""
    if alg != ALG.AES:
        raise ValueError(f"no block cipher 0x{alg:04x}")
    enc = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def cfb_decrypt(alg: int, key: bytes, iv: bytes, data: bytes) -> bytes:
    """Invert :func:`cfb_encrypt`."""
    if alg != ALG.AES:
        raise ValueError(f"no block cipher 0x{alg:04x}")
    dec = Cipher(algorithms.AES(key), CFB(iv)).decryptor()
    return dec.update(data) + dec.finalize()
