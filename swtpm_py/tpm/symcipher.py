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


# ---------------------------------------------------------------------------- TPM2_EncryptDecrypt
#
# The block cipher modes of TPM2_EncryptDecrypt (Part 3 §15.2, Part 1 §11.4.6): the data come
# from ``cryptography``'s modes; what is written here is the chaining value the TPM returns as
# ivOut, as swtpm 0.7.1 (libtpms over OpenSSL) computes it.

from cryptography.hazmat.primitives.ciphers import modes as _modes  # noqa: E402

try:  # cryptography >= 43 keeps OFB in its "decrepit" module too
    from cryptography.hazmat.decrepit.ciphers.modes import OFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import OFB  # type: ignore[assignment]

#: The modes :func:`encrypt_decrypt` implements.
MODES = frozenset({ALG.CTR, ALG.OFB, ALG.CBC, ALG.CFB, ALG.ECB})
#: Modes whose input must be a whole number of blocks (Part 3 §15.2.1: TPM_RC_SIZE).
BLOCK_MODES = frozenset({ALG.CBC, ALG.ECB})


def _block_encrypt(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), _modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def _mode_object(mode: int, iv: bytes) -> _modes.Mode:
    if mode == ALG.CTR:
        return _modes.CTR(iv)
    if mode == ALG.OFB:
        return OFB(iv)
    if mode == ALG.CBC:
        return _modes.CBC(iv)
    if mode == ALG.CFB:
        return CFB(iv)
    return _modes.ECB()


def _iv_out(mode: int, key: bytes, iv: bytes, ciphertext: bytes, data_in: bytes,
            data_out: bytes) -> bytes:
    """The chaining value after the last block (Part 3 §15.2.1 ivOut), so that a second call
    with it continues the first: CBC and CFB the last ciphertext block, OFB the last key stream
    block, CTR the counter after the last block, ECB nothing. A partial last CFB block is its
    ciphertext followed by the rest of the key stream block it was XORed with (libtpms; the
    reference's C code pads with zeros instead)."""
    size = BLOCK_SIZES[ALG.AES]
    if not data_in or mode == ALG.ECB:
        return iv
    blocks = -(-len(data_in) // size)
    tail = len(data_in) - (blocks - 1) * size
    if mode == ALG.CTR:
        counter = (int.from_bytes(iv, "big") + blocks) % (1 << (8 * size))
        return counter.to_bytes(size, "big")
    if mode == ALG.CBC:
        return ciphertext[-size:]
    previous_start = (blocks - 2) * size
    if mode == ALG.CFB:
        if tail == size:
            return ciphertext[-size:]
        previous = iv if blocks == 1 else ciphertext[previous_start:previous_start + size]
        return ciphertext[-tail:] + _block_encrypt(key, previous)[tail:]
    # OFB: the key stream is the data XOR its transform.
    if tail == size:
        return _xor(data_in[-size:], data_out[-size:])
    previous = iv if blocks == 1 else _xor(data_in[previous_start:previous_start + size],
                                           data_out[previous_start:previous_start + size])
    return _block_encrypt(key, previous)


def encrypt_decrypt(alg: int, key: bytes, mode: int, iv: bytes, data: bytes,
                    decrypt: bool) -> tuple[bytes, bytes]:
    """Encrypt or decrypt ``data`` with block cipher ``alg`` in ``mode`` (one of
    :data:`MODES`), no padding; returns (output, ivOut). The caller has checked the sizes: an
    IV of one block (empty for ECB) and whole blocks for :data:`BLOCK_MODES`."""
    if alg != ALG.AES:
        raise ValueError(f"no block cipher 0x{alg:04x}")
    cipher = Cipher(algorithms.AES(key), _mode_object(mode, iv))
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    out = ctx.update(data) + ctx.finalize()
    ciphertext = data if decrypt else out
    return out, _iv_out(mode, key, iv, ciphertext, data, out)
