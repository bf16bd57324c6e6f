"""Session-based parameter encryption (Part 1 §21) and the XOR obfuscation it may use.

A session with the *decrypt* attribute encrypts the first command parameter, one with the
*encrypt* attribute the first response parameter; only the data of that TPM2B is transformed,
never its size field. The key material is ``sessionKey || authValue`` (the authValue of the
entity the session authorizes, if any), and the nonces enter newest first: nonceCaller then
nonceTPM for a command, nonceTPM then nonceCaller for a response.

* XOR (Part 1 §21.2, §11.4.6.3): data XOR KDFa(authHash, key, "XOR", nonceNewer, nonceOlder,
  8 * len(data)).
* A block cipher in CFB mode (Part 1 §21.3): KDFa(authHash, key, "CFB", nonceNewer,
  nonceOlder, keyBits + blockBits) gives the cipher key (its first keyBits) and the IV.

Only these framings live here; AES itself comes from ``cryptography`` (:mod:`.symcipher`).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import symcipher
from .constants import ALG
from .crypto import kdfa


@dataclass(frozen=True)
class SymDef:
    """TPMT_SYM_DEF of a session (Part 2 §11.1.6): the algorithm (TPM_ALG_NULL, TPM_ALG_XOR or
    a block cipher), its key size in bits (for XOR: a hash algorithm) and its mode (CFB)."""

    alg: int
    key_bits: int = 0
    mode: int = ALG.NULL


def xor_mask(hash_alg: int, key: bytes, nonce_newer: bytes, nonce_older: bytes,
             data: bytes) -> bytes:
    """Part 1 §11.4.6.3 XOR obfuscation: ``data`` XOR a KDFa mask as long as ``data`` (its own
    inverse)."""
    if not data:
        return b""
    mask = kdfa(hash_alg, key, b"XOR", nonce_newer, nonce_older, 8 * len(data))
    return bytes(a ^ b for a, b in zip(data, mask))


def cfb_key_iv(hash_alg: int, key: bytes, sym: SymDef, nonce_newer: bytes,
               nonce_older: bytes) -> tuple[bytes, bytes]:
    """Part 1 §21.3: the block cipher's key and IV, from one KDFa of keyBits + blockBits."""
    block = symcipher.BLOCK_SIZES[sym.alg]
    material = kdfa(hash_alg, key, b"CFB", nonce_newer, nonce_older, sym.key_bits + 8 * block)
    return material[:sym.key_bits // 8], material[sym.key_bits // 8:]


def transform(sym: SymDef, hash_alg: int, key: bytes, nonce_newer: bytes, nonce_older: bytes,
              data: bytes, *, decrypt: bool) -> bytes:
    """Encrypt (``decrypt=False``) or decrypt ``data`` with the session cipher ``sym``.

    ``hash_alg`` is the session's authHash: the KDF of both XOR and CFB uses it (the reference's
    CryptParameterEncryption(); for XOR the hash in ``sym.key_bits`` only selects the scheme).
    """
    if sym.alg == ALG.XOR:
        return xor_mask(hash_alg, key, nonce_newer, nonce_older, data)
    cipher_key, iv = cfb_key_iv(hash_alg, key, sym, nonce_newer, nonce_older)
    if decrypt:
        return symcipher.cfb_decrypt(sym.alg, cipher_key, iv, data)
    return symcipher.cfb_encrypt(sym.alg, cipher_key, iv, data)


def decrypt_command_parameter(sym: SymDef, hash_alg: int, key: bytes, nonce_caller: bytes,
                              nonce_tpm: bytes, data: bytes) -> bytes:
    """The plaintext of an encrypted first command parameter's data (nonceCaller is newer)."""
    return transform(sym, hash_alg, key, nonce_caller, nonce_tpm, data, decrypt=True)


def encrypt_response_parameter(sym: SymDef, hash_alg: int, key: bytes, nonce_tpm: bytes,
                               nonce_caller: bytes, data: bytes) -> bytes:
    """The ciphertext of the first response parameter's data (the new nonceTPM is newer)."""
    return transform(sym, hash_alg, key, nonce_tpm, nonce_caller, data, decrypt=False)
