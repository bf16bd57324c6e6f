"""TPM2_EncryptDecrypt and TPM2_EncryptDecrypt2 (Part 3 §15).

* In process: a symmetric key loaded with TPM2_LoadExternal (known key octets) encrypts and
  decrypts in every mode exactly as ``cryptography``'s AES does, and ivOut chains calls.
* Differential: the same raw commands to swtpm_py and the real swtpm give the same octets
  (outData and ivOut) and the same response codes for invalid calls.
* tpm2-tools (tpm2_encryptdecrypt) against swtpm_py, tpm2-pytss (encrypt_decrypt_2 through
  a decrypt and encrypt session) against both emulators.

The algorithm registry lists CFB as the only mode so far; the tests of the other modes
(CTR, OFB, CBC, ECB, all implemented by swtpm 0.7.1) register them in a copy of the registry.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from collections.abc import Callable

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB, OFB
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_SESSION
from tpm2_pytss.types import TPM2B_IV, TPM2B_MAX_BUFFER, TPM2B_PUBLIC, TPM2B_SENSITIVE

from swtpm_py.tpm import Tpm, algorithms as registry
from swtpm_py.tpm.constants import ALG, CC, RH, AlgAttr
from swtpm_py.tpm.registry import COMMANDS

from objcmd import (A, authed, b2, create_primary, ecc_template, flush, load_external,
                    parse_load, rc, symcipher_template, u16)

Send = Callable[[bytes], bytes]
H1, P1, P2, P3, P4, S1 = 0x100, 0x140, 0x240, 0x340, 0x440, 0x900
RC_ATTRIBUTES, RC_VALUE, RC_MODE, RC_SIZE, RC_KEY = 0x082, 0x084, 0x089, 0x095, 0x09C

KEY128 = bytes(range(16))
KEY256 = bytes(range(0x40, 0x60))
IV = bytes(range(100, 116))
#: Both directions allowed; noDA so that the password needs no DA bookkeeping.
BOTH = A.DECRYPT | A.SIGN_ENCRYPT | A.USER_WITH_AUTH | A.NO_DA
OTHER_MODES = (ALG.CTR, ALG.OFB, ALG.CBC, ALG.ECB)
ALL_MODES = (ALG.CFB, *OTHER_MODES)


@pytest.fixture
def all_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry that lists CTR, OFB, CBC and ECB besides CFB, as swtpm 0.7.1 does (with
    the TPMA_ALGORITHM swtpm reports for them); modes already registered stay as they are."""
    monkeypatch.setattr(registry, "ALGORITHMS", dict(registry.ALGORITHMS))
    for mode in set(OTHER_MODES) - set(registry.ALGORITHMS):
        registry.register(registry.Algorithm(
            mode, AlgAttr.SYMMETRIC | AlgAttr.ENCRYPTING, frozenset({registry.Role.SYM_MODE})))


# ---------------------------------------------------------------------------- helpers


def sym_key(key: bytes, attrs: int = BOTH, mode: int = ALG.NULL) -> tuple[bytes, bytes]:
    """(TPMT_PUBLIC, TPMT_SENSITIVE) of an AES key with known octets (Part 1: unique is
    H_nameAlg(seedValue || key))."""
    seed = bytes(range(32))
    public = symcipher_template(attrs, bits=8 * len(key), mode=mode,
                                unique=hashlib.sha256(seed + key).digest())
    return public, u16(ALG.SYMCIPHER) + b2(b"") + b2(seed) + b2(key)


def load_key(send: Send, key: bytes, attrs: int = BOTH, mode: int = ALG.NULL) -> int:
    """Load the key with TPM2_LoadExternal into the NULL hierarchy; its handle."""
    response = send(load_external(*sym_key(key, attrs, mode)))
    assert rc(response) == 0, hex(rc(response))
    return parse_load(response)[0]


def encrypt_decrypt(handle: int, decrypt: int, mode: int, iv: bytes, data: bytes) -> bytes:
    """TPM2_EncryptDecrypt."""
    return authed(CC.EncryptDecrypt, struct.pack(">I", handle),
                  bytes([decrypt]) + u16(mode) + b2(iv) + b2(data))


def encrypt_decrypt2(handle: int, decrypt: int, mode: int, iv: bytes, data: bytes) -> bytes:
    """TPM2_EncryptDecrypt2 (the same arguments, inData first on the wire)."""
    return authed(CC.EncryptDecrypt2, struct.pack(">I", handle),
                  b2(data) + bytes([decrypt]) + u16(mode) + b2(iv))


def result(response: bytes) -> tuple[bytes, bytes]:
    """(outData, ivOut) of a successful response."""
    assert rc(response) == 0, hex(rc(response))
    off = 14
    size = struct.unpack_from(">H", response, off)[0]
    out = response[off + 2:off + 2 + size]
    off += 2 + size
    size = struct.unpack_from(">H", response, off)[0]
    return out, response[off + 2:off + 2 + size]


def reference_cipher(mode: int, key: bytes, iv: bytes) -> Cipher:
    """``cryptography``'s AES in ``mode``."""
    m = {ALG.CFB: lambda: CFB(iv), ALG.OFB: lambda: OFB(iv), ALG.CTR: lambda: modes.CTR(iv),
         ALG.CBC: lambda: modes.CBC(iv), ALG.ECB: modes.ECB}[mode]()
    return Cipher(algorithms.AES(key), m)


def expected(mode: int, key: bytes, iv: bytes, data: bytes, decrypt: bool) -> bytes:
    """outData as ``cryptography`` computes it."""
    c = reference_cipher(mode, key, iv)
    ctx = c.decryptor() if decrypt else c.encryptor()
    return ctx.update(data) + ctx.finalize()


def iv_for(mode: int) -> bytes:
    """One block of IV, none for ECB."""
    return b"" if mode == ALG.ECB else IV


# ---------------------------------------------------------------------------- in process


@pytest.mark.parametrize("key", [KEY128, KEY256], ids=["aes128", "aes256"])
def test_every_mode_matches_cryptography(tpm: Tpm, all_modes: None, key: bytes) -> None:
    """Encryption and decryption in each mode give what AES in that mode gives (no padding;
    partial last blocks in the stream modes), and decrypting the ciphertext gives the data
    back, through both commands."""
    handle = load_key(tpm.execute, key)
    for mode in ALL_MODES:
        sizes = (16, 64) if mode in (ALG.CBC, ALG.ECB) else (1, 16, 37, 64)
        for size in sizes:
            data = os.urandom(size)
            for build in (encrypt_decrypt, encrypt_decrypt2):
                ct, _ = result(tpm.execute(build(handle, 0, mode, iv_for(mode), data)))
                assert ct == expected(mode, key, iv_for(mode), data, False), (mode, size)
                pt, _ = result(tpm.execute(build(handle, 1, mode, iv_for(mode), ct)))
                assert pt == data
                assert pt == expected(mode, key, iv_for(mode), ct, True)


def test_iv_out_chains_calls(tpm: Tpm, all_modes: None) -> None:
    """Part 3 §15.2.1: ivOut is the chaining value, so encrypting in two calls (the first one
    whole blocks) gives the ciphertext of one call, in every mode with an IV."""
    handle = load_key(tpm.execute, KEY128)
    data = os.urandom(80)
    for mode in (ALG.CFB, ALG.OFB, ALG.CTR, ALG.CBC):
        whole = expected(mode, KEY128, IV, data, False)
        first, iv_out = result(tpm.execute(encrypt_decrypt(handle, 0, mode, IV, data[:48])))
        second, _ = result(tpm.execute(encrypt_decrypt(handle, 0, mode, iv_out, data[48:])))
        assert first + second == whole, mode
        # and the same for decryption
        back1, iv_out = result(tpm.execute(encrypt_decrypt(handle, 1, mode, IV, whole[:32])))
        back2, _ = result(tpm.execute(encrypt_decrypt(handle, 1, mode, iv_out, whole[32:])))
        assert back1 + back2 == data, mode


def test_ecb_has_no_iv_and_empty_data_returns_the_iv(tpm: Tpm, all_modes: None) -> None:
    """ECB takes and returns an empty IV; no data gives no data and ivOut = ivIn."""
    handle = load_key(tpm.execute, KEY128)
    out, iv_out = result(tpm.execute(encrypt_decrypt(handle, 0, ALG.ECB, b"", bytes(32))))
    assert iv_out == b"" and out[:16] == out[16:]
    assert result(tpm.execute(encrypt_decrypt(handle, 0, ALG.CFB, IV, b""))) == (b"", IV)


def test_the_key_mode_governs(tpm: Tpm, all_modes: None) -> None:
    """A key with a mode uses it when the caller says TPM_ALG_NULL, and refuses another one
    (TPM_RC_MODE + P2); a key without a mode needs the caller's (TPM_RC_MODE + P2)."""
    handle = load_key(tpm.execute, KEY128, mode=ALG.CBC)
    data = os.urandom(32)
    assert result(tpm.execute(encrypt_decrypt(handle, 0, ALG.NULL, IV, data)))[0] == \
        expected(ALG.CBC, KEY128, IV, data, False)
    assert rc(tpm.execute(encrypt_decrypt(handle, 0, ALG.CFB, IV, data))) == RC_MODE + P2
    loose = load_key(tpm.execute, KEY128)
    assert rc(tpm.execute(encrypt_decrypt(loose, 0, ALG.NULL, IV, data))) == RC_MODE + P2
    assert rc(tpm.execute(encrypt_decrypt2(loose, 0, ALG.NULL, IV, data))) == RC_MODE + P3


def test_decrypt_session_only_for_encrypt_decrypt2() -> None:
    """EncryptDecrypt's first parameter is TPMI_YES_NO, so no session may decrypt it
    (Part 1 §21); EncryptDecrypt2 exists for that. Both may encrypt outData."""
    assert not COMMANDS[CC.EncryptDecrypt].decrypt
    assert COMMANDS[CC.EncryptDecrypt2].decrypt
    assert COMMANDS[CC.EncryptDecrypt].encrypt and COMMANDS[CC.EncryptDecrypt2].encrypt


# ---------------------------------------------------------------------------- differential


def both(pair: dict, build: Callable[[int], bytes], *loads: tuple) -> dict[str, bytes]:
    """Load the keys ``loads`` ((key, attrs, mode) each) into both emulators, send
    ``build(*handles)``, flush; the responses by emulator."""
    out = {}
    for kind, emu in pair.items():
        handles = [load_key(emu.command, *spec) for spec in loads]
        out[kind] = emu.command(build(*handles))
        for h in handles:
            assert rc(emu.command(flush(h))) == 0
    return out


def test_cfb_output_is_swtpms(pair: dict) -> None:
    """CFB (both key sizes, partial blocks, both commands, the key's mode or the caller's):
    outData and ivOut are swtpm's octet for octet."""
    data = bytes(range(37))
    for key, mode in ((KEY128, ALG.NULL), (KEY256, ALG.CFB)):
        for build in (encrypt_decrypt, encrypt_decrypt2):
            for decrypt in (0, 1):
                got = both(pair, lambda h: build(h, decrypt, ALG.CFB, IV, data),
                           (key, BOTH, mode))
                assert rc(got["swtpm"]) == 0
                assert got["swtpm_py"] == got["swtpm"]


def test_other_modes_are_swtpms(pair: dict, tpm: Tpm, all_modes: None) -> None:
    """CTR, OFB, CBC and ECB (registered): outData and ivOut as swtpm's, sizes with partial
    blocks for the stream modes."""
    ref = pair["swtpm"]
    mine = load_key(tpm.execute, KEY128)
    theirs = load_key(ref.command, KEY128)
    try:
        for mode in OTHER_MODES:
            for size in ((16, 48) if mode in (ALG.CBC, ALG.ECB) else (5, 37)):
                data = bytes(range(size))
                for decrypt in (0, 1):
                    for build in (encrypt_decrypt, encrypt_decrypt2):
                        a = tpm.execute(build(mine, decrypt, mode, iv_for(mode), data))
                        b = ref.command(build(theirs, decrypt, mode, iv_for(mode), data))
                        assert rc(b) == 0 and a == b, (mode, size, decrypt)
    finally:
        ref.command(flush(theirs))


ENC_ONLY = A.SIGN_ENCRYPT | A.USER_WITH_AUTH | A.NO_DA
DEC_ONLY = A.DECRYPT | A.USER_WITH_AUTH | A.NO_DA
DATA37 = bytes(37)

#: (description, command builder over the key handle, key spec, swtpm 0.7.1's code).
ERRORS = [
    ("mode NULL, key NULL", lambda h: encrypt_decrypt(h, 0, ALG.NULL, IV, DATA37),
     (KEY128, BOTH, ALG.NULL), RC_MODE + P2),
    ("mode NULL, key NULL (2)", lambda h: encrypt_decrypt2(h, 0, ALG.NULL, IV, DATA37),
     (KEY128, BOTH, ALG.NULL), RC_MODE + P3),
    ("unknown mode", lambda h: encrypt_decrypt(h, 0, 0x45, IV, DATA37),
     (KEY128, BOTH, ALG.NULL), RC_MODE + P2),
    ("unknown mode (2)", lambda h: encrypt_decrypt2(h, 0, 0x45, IV, DATA37),
     (KEY128, BOTH, ALG.NULL), RC_MODE + P3),
    ("IV of 15", lambda h: encrypt_decrypt(h, 0, ALG.CFB, IV[:15], DATA37),
     (KEY128, BOTH, ALG.NULL), RC_SIZE + P3),
    ("IV of 15 (2)", lambda h: encrypt_decrypt2(h, 0, ALG.CFB, IV[:15], DATA37),
     (KEY128, BOTH, ALG.NULL), RC_SIZE + P4),
    ("IV of 17", lambda h: encrypt_decrypt(h, 0, ALG.CFB, IV + b"x", DATA37),
     (KEY128, BOTH, ALG.NULL), RC_SIZE + P3),
    ("empty IV", lambda h: encrypt_decrypt(h, 0, ALG.CFB, b"", DATA37),
     (KEY128, BOTH, ALG.NULL), RC_SIZE + P3),
    ("decrypt 2", lambda h: encrypt_decrypt(h, 2, ALG.CFB, IV, DATA37),
     (KEY128, BOTH, ALG.NULL), RC_VALUE + P1),
    ("decrypt 2 (2)", lambda h: encrypt_decrypt2(h, 2, ALG.CFB, IV, DATA37),
     (KEY128, BOTH, ALG.NULL), RC_VALUE + P2),
    ("inData too large", lambda h: encrypt_decrypt(h, 0, ALG.CFB, IV, bytes(1025)),
     (KEY128, BOTH, ALG.NULL), RC_SIZE + P4),
    ("encrypt with decrypt-only key", lambda h: encrypt_decrypt(h, 0, ALG.CFB, IV, DATA37),
     (KEY128, DEC_ONLY, ALG.NULL), RC_ATTRIBUTES + H1),
    ("decrypt with sign-only key", lambda h: encrypt_decrypt2(h, 1, ALG.CFB, IV, DATA37),
     (KEY128, ENC_ONLY, ALG.CFB), RC_ATTRIBUTES + H1),
    ("unmarshalling before attributes", lambda h: encrypt_decrypt(h, 0, 0x45, IV, DATA37),
     (KEY128, DEC_ONLY, ALG.CFB), RC_MODE + P2),
    ("mode differs from key's", lambda h: encrypt_decrypt(h, 1, ALG.CBC, IV, DATA37),
     (KEY128, DEC_ONLY, ALG.CFB), RC_MODE + P2),
    ("key's mode", lambda h: encrypt_decrypt(h, 1, ALG.NULL, IV, DATA37),
     (KEY128, DEC_ONLY, ALG.CFB), 0),
    ("decrypt session on EncryptDecrypt",
     lambda h: authed(CC.EncryptDecrypt, struct.pack(">I", h),
                      b"\x00" + u16(ALG.CFB) + b2(IV) + b2(DATA37),
                      struct.pack(">IHB", RH.PW, 0, 0x21) + b2(b"")),
     (KEY128, BOTH, ALG.NULL), RC_ATTRIBUTES + S1),
]


@pytest.mark.parametrize("build,key,code", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_error_codes_are_swtpms(pair: dict, build: Callable, key: tuple, code: int) -> None:
    """Invalid calls: the code swtpm 0.7.1 answers, the same from both emulators."""
    got = both(pair, build, key)
    assert rc(got["swtpm"]) == code
    assert rc(got["swtpm_py"]) == code
    if code == 0:
        assert got["swtpm_py"] == got["swtpm"]


def test_not_a_symmetric_key(pair: dict) -> None:
    """An ECC key (with its private part, authorized) is TPM_RC_KEY + H1 on both."""
    d = ec.generate_private_key(ec.SECP256R1())
    nums = d.public_key().public_numbers()
    public = ecc_template(BOTH, sym=u16(ALG.NULL), x=nums.x.to_bytes(32, "big"),
                          y=nums.y.to_bytes(32, "big"))
    sensitive = (u16(ALG.ECC) + b2(b"") + b2(b"")
                 + b2(d.private_numbers().private_value.to_bytes(32, "big")))
    for emu in pair.values():
        handle = parse_load(emu.command(load_external(public, sensitive)))[0]
        try:
            assert rc(emu.command(encrypt_decrypt(handle, 0, ALG.CFB, IV, b"x"))) == \
                RC_KEY + H1
        finally:
            emu.command(flush(handle))


def test_restricted_key(pair: dict) -> None:
    """A restricted symmetric key (a symmetric storage parent) encrypts nothing for the caller
    (TPM_RC_ATTRIBUTES + H1), on both."""
    template = symcipher_template(A.RESTRICTED | A.DECRYPT | A.FIXED_TPM | A.FIXED_PARENT
                                  | A.SENSITIVE_DATA_ORIGIN | A.USER_WITH_AUTH | A.NO_DA)
    for emu in pair.values():
        response = emu.command(create_primary(template))
        assert rc(response) == 0
        handle = struct.unpack(">I", response[10:14])[0]
        try:
            for decrypt in (0, 1):
                assert rc(emu.command(encrypt_decrypt(handle, decrypt, ALG.CFB, IV, b"x"))) == \
                    RC_ATTRIBUTES + H1
        finally:
            emu.command(flush(handle))


# ---------------------------------------------------------------------------- clients


def test_tpm2_encryptdecrypt(emulator, tmp_path) -> None:
    """tpm2_loadexternal of a known AES-128 key, then tpm2_encryptdecrypt -G cfb with an IV
    file: the ciphertext is cryptography's AES-CFB, a second IV gives another one, and -d
    gives the data back. (No resource manager: each tool's transient objects are flushed.)"""
    env = dict(os.environ, TPM2TOOLS_TCTI=emulator.tcti)

    def tool(*args: str) -> None:
        for argv in (args, ("tpm2_flushcontext", "-t")):
            subprocess.run(argv, env=env, check=True, capture_output=True, cwd=tmp_path)

    (tmp_path / "sym.key").write_bytes(KEY128)
    tool("tpm2_loadexternal", "-G", "aes", "-r", "sym.key", "-c", "key.ctx")
    data = os.urandom(100)
    (tmp_path / "plain").write_bytes(data)
    (tmp_path / "iv").write_bytes(IV)
    (tmp_path / "iv2").write_bytes(bytes(16))
    tool("tpm2_encryptdecrypt", "-c", "key.ctx", "-G", "cfb", "-t", "iv", "-o", "ct", "plain")
    tool("tpm2_encryptdecrypt", "-e", "-c", "key.ctx", "-G", "cfb", "-t", "iv2", "-o", "ct2",
         "plain")
    ct = (tmp_path / "ct").read_bytes()
    assert ct == expected(ALG.CFB, KEY128, IV, data, False)
    assert (tmp_path / "ct2").read_bytes() == expected(ALG.CFB, KEY128, bytes(16), data, False)
    tool("tpm2_encryptdecrypt", "-d", "-c", "key.ctx", "-G", "cfb", "-t", "iv", "-o", "back",
         "ct")
    assert (tmp_path / "back").read_bytes() == data


def test_pytss_encrypt_decrypt_2_with_parameter_encryption(any_emulator) -> None:
    """tpm2-pytss on both emulators: a LoadExternal'd AES key, EncryptDecrypt2 through an HMAC
    session with the decrypt and encrypt attributes (inData and outData travel encrypted): the
    result is cryptography's AES-CFB, and decryption gives the data back."""
    with TCTILdr.parse(any_emulator.tcti) as tcti, ESAPI(tcti) as esys:
        public, sensitive = sym_key(KEY128)
        handle = esys.load_external(TPM2B_PUBLIC.unmarshal(b2(public))[0],
                                    TPM2B_SENSITIVE.unmarshal(b2(sensitive))[0])
        session = esys.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC,
                                          "aes128cfb", TPM2_ALG.SHA256)
        esys.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION
                                   | TPMA_SESSION.DECRYPT | TPMA_SESSION.ENCRYPT)
        data = os.urandom(64)
        out, iv_out = esys.encrypt_decrypt_2(handle, False, TPM2_ALG.CFB, TPM2B_IV(IV),
                                             TPM2B_MAX_BUFFER(data), session1=session)
        assert bytes(out) == expected(ALG.CFB, KEY128, IV, data, False)
        assert bytes(iv_out) == bytes(out)[-16:]
        back, _ = esys.encrypt_decrypt_2(handle, True, TPM2_ALG.CFB, TPM2B_IV(IV), out,
                                         session1=session)
        assert bytes(back) == data
