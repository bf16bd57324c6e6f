"""TPM2_Unseal (Part 3 §12.7): sealed data objects made with TPM2_Create give back their secret.

* In process: sealed with and without an authValue, the secret comes back; keys are refused
  (TPM_RC_TYPE for another type, TPM_RC_ATTRIBUTES for a keyed-hash key that signs, decrypts
  or is restricted).
* Differential: the same raw commands to swtpm_py and the real swtpm 0.7.1 give the same codes
  and the same secrets.
* tpm2-tools (tpm2_create -i, tpm2_unseal, with a PCR policy) and tpm2-pytss ESAPI (an HMAC
  session that encrypts the response, a PolicyPCR and a PolicyPassword session).
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_SESSION
from tpm2_pytss.types import (TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, TPML_PCR_SELECTION,
                              TPMS_SENSITIVE_CREATE, TPMT_SYM_DEF)

from emulator import Emulator
from objcmd import (A, authed, cmd, create, create_primary, keyedhash_template, load,
                    parse_create, parse_create_primary, parse_load, pw, rc, rsa_template, u16)

from swtpm_py.tpm import Tpm
from swtpm_py.tpm.constants import ALG, CC

H1 = 0x100
TPM_RC_TYPE, TPM_RC_ATTRIBUTES, TPM_RC_BAD_AUTH = 0x08A, 0x082, 0x0A2
SECRET = b"the sealed secret \x00\x01\x02"
#: A sealed data object: a keyed hash that neither signs nor decrypts, data from the caller.
SEALED = A.FIXED_TPM | A.FIXED_PARENT | A.USER_WITH_AUTH | A.NO_DA


def unseal(handle: int, password: bytes = b"") -> bytes:
    """TPM2_Unseal with a password session."""
    return authed(CC.Unseal, struct.pack(">I", handle), b"", pw(password))


def unsealed(response: bytes) -> bytes:
    """The outData of a successful TPM2_Unseal response."""
    assert rc(response) == 0, hex(rc(response))
    size = struct.unpack_from(">H", response, 14)[0]
    return response[16:16 + size]


def seal(execute, parent: int, data: bytes = SECRET, auth: bytes = b"",
         attrs: int = SEALED, scheme: bytes = u16(ALG.NULL)) -> int:
    """Create a keyed-hash object holding ``data`` under ``parent`` and load it; its handle."""
    response = execute(create(parent, keyedhash_template(attrs, scheme=scheme), auth=auth,
                              data=data))
    assert rc(response) == 0, hex(rc(response))
    created = parse_create(response)
    handle, _ = parse_load(execute(load(parent, created["private"], created["public"])))
    return handle


def storage_primary(execute) -> int:
    """An RSA storage primary in the owner hierarchy."""
    return parse_create_primary(execute(create_primary(rsa_template())))["handle"]


def flush(execute, handle: int) -> None:
    """TPM2_FlushContext."""
    assert rc(execute(cmd(CC.FlushContext, struct.pack(">I", handle)))) == 0


def test_unseal_returns_the_sealed_data(tpm: Tpm) -> None:
    """The secret comes back as it was sealed, with the object's authValue; a wrong one is
    TPM_RC_BAD_AUTH (noDA) on session 1; an empty secret is an empty TPM2B."""
    parent = storage_primary(tpm.execute)
    item = seal(tpm.execute, parent, auth=b"item password")
    assert unsealed(tpm.execute(unseal(item, b"item password"))) == SECRET
    assert rc(tpm.execute(unseal(item, b"wrong"))) == TPM_RC_BAD_AUTH | 0x900
    flush(tpm.execute, item)
    big = seal(tpm.execute, parent, data=bytes(range(128)))
    assert unsealed(tpm.execute(unseal(big))) == bytes(range(128))


def differential_run(execute) -> list[tuple[str, str, bytes]]:
    """Unseal calls valid and invalid: [(case, rc, outData)]."""
    parent = storage_primary(execute)
    results = []
    item = seal(execute, parent)
    results.append(("sealed", *_outcome(execute(unseal(item)))))
    results.append(("storage-key", *_outcome(execute(unseal(parent)))))
    flush(execute, item)
    hmac_key = seal(execute, parent, attrs=SEALED | A.SIGN_ENCRYPT,
                    scheme=u16(ALG.HMAC, ALG.SHA256))
    results.append(("hmac-key", *_outcome(execute(unseal(hmac_key)))))
    flush(execute, hmac_key)
    xor_key = seal(execute, parent, attrs=SEALED | A.DECRYPT,
                   scheme=u16(ALG.XOR, ALG.SHA256, ALG.KDF1_SP800_108))
    results.append(("xor-key", *_outcome(execute(unseal(xor_key)))))
    flush(execute, xor_key)
    sequence = execute(cmd(CC.HashSequenceStart, u16(0) + u16(ALG.SHA256)))
    seq = struct.unpack_from(">I", sequence, 10)[0]
    results.append(("sequence", *_outcome(execute(unseal(seq)))))
    flush(execute, seq)
    results.append(("nothing-loaded", *_outcome(execute(unseal(0x80000002)))))
    flush(execute, parent)
    return results


def _outcome(response: bytes) -> tuple[str, bytes]:
    return hex(rc(response)), unsealed(response) if rc(response) == 0 else b""


def test_differential_against_swtpm(pair: dict[str, Emulator]) -> None:
    """The same Unseal calls on both emulators: the same codes and secrets."""
    results = {kind: differential_run(emu.command) for kind, emu in pair.items()}
    assert results["swtpm_py"] == results["swtpm"]
    assert results["swtpm"][:4] == [
        ("sealed", "0x0", SECRET), ("storage-key", hex(TPM_RC_TYPE | H1), b""),
        ("hmac-key", hex(TPM_RC_ATTRIBUTES | H1), b""),
        ("xor-key", hex(TPM_RC_ATTRIBUTES | H1), b"")]


# ============================================================================ tpm2-tools


def tool(emu: Emulator, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """Run a tpm2-tools binary against ``emu`` (it must succeed), then flush the transient
    objects it left in the three slots."""
    proc = subprocess.run([argv[0], "-T", emu.tcti, *argv[1:]], capture_output=True,
                          timeout=60, cwd=cwd)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    subprocess.run(["tpm2_flushcontext", "-T", emu.tcti, "-t"], capture_output=True,
                   timeout=60, cwd=cwd, check=True)
    return proc


def test_tools_seal_unseal(any_emulator: Emulator, tmp_path: Path) -> None:
    """tpm2_create -i seals a file, tpm2_unseal gives it back: with a password, and bound to a
    PCR policy (tpm2_createpolicy --policy-pcr) unsealed with ``-p pcr:``; after the PCR
    changes the policy fails."""
    emu = any_emulator
    (tmp_path / "secret.bin").write_bytes(SECRET)
    tool(emu, tmp_path, "tpm2_createprimary", "-C", "o", "-c", "primary.ctx")
    tool(emu, tmp_path, "tpm2_create", "-C", "primary.ctx", "-i", "secret.bin", "-p", "pw",
         "-u", "seal.pub", "-r", "seal.priv")
    tool(emu, tmp_path, "tpm2_load", "-C", "primary.ctx", "-u", "seal.pub", "-r", "seal.priv",
         "-c", "seal.ctx")
    out = tool(emu, tmp_path, "tpm2_unseal", "-c", "seal.ctx", "-p", "pw").stdout
    assert out == SECRET
    tool(emu, tmp_path, "tpm2_createpolicy", "--policy-pcr", "-l", "sha256:7",
         "-L", "pcr.policy")
    tool(emu, tmp_path, "tpm2_create", "-C", "primary.ctx", "-i", "secret.bin",
         "-L", "pcr.policy", "-u", "pcr.pub", "-r", "pcr.priv")
    tool(emu, tmp_path, "tpm2_load", "-C", "primary.ctx", "-u", "pcr.pub", "-r", "pcr.priv",
         "-c", "pcr.ctx")
    out = tool(emu, tmp_path, "tpm2_unseal", "-c", "pcr.ctx", "-p", "pcr:sha256:7").stdout
    assert out == SECRET
    tool(emu, tmp_path, "tpm2_pcrextend", "7:sha256=" + "11" * 32)
    proc = subprocess.run(["tpm2_unseal", "-T", emu.tcti, "-c", "pcr.ctx", "-p",
                           "pcr:sha256:7"], capture_output=True, timeout=60, cwd=tmp_path)
    assert proc.returncode != 0 and SECRET not in proc.stdout


# ============================================================================ tpm2-pytss


@pytest.fixture
def esapi(any_emulator: Emulator):
    """ESAPI over the swtpm TCTI to each emulator in turn."""
    ctx = ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}"))
    yield ctx
    ctx.close()


def esapi_sealed(ctx: ESAPI, auth: bytes = b"", policy: bytes = b"",
                 attrs: str = "fixedtpm|fixedparent|userwithauth|noda") -> ESYS_TR:
    """A storage primary, and a sealed object holding SECRET under it (loaded)."""
    primary = ctx.create_primary(TPM2B_SENSITIVE_CREATE(),
                                 TPM2B_PUBLIC.parse("rsa2048:aes128cfb", objectAttributes=(
                                     "restricted|decrypt|fixedtpm|fixedparent|"
                                     "sensitivedataorigin|userwithauth|noda")),
                                 ESYS_TR.OWNER)[0]
    sens = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=auth, data=SECRET))
    pub = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=attrs)
    pub.publicArea.authPolicy = policy
    private, public = ctx.create(primary, sens, pub)[:2]
    item = ctx.load(primary, private, public)
    ctx.flush_context(primary)
    ctx.tr_set_auth(item, auth)
    return item


def test_pytss_unseal_with_encrypting_session(esapi: ESAPI) -> None:
    """ESAPI unseal through an HMAC session with the encrypt attribute: the TPM encrypts the
    secret (the first response parameter) and ESAPI decrypts it and checks the response
    HMAC, which covers the object's authValue."""
    item = esapi_sealed(esapi, auth=b"secret auth")
    sym = TPMT_SYM_DEF.parse("aes128cfb")
    session = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC, sym,
                                       TPM2_ALG.SHA256)
    esapi.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION | TPMA_SESSION.ENCRYPT)
    assert bytes(esapi.unseal(item, session1=session)) == SECRET
    assert bytes(esapi.unseal(item)) == SECRET
    esapi.tr_set_auth(item, b"wrong")
    with pytest.raises(TSS2_Exception):
        esapi.unseal(item)


def policy_digest(ctx: ESAPI, pcr: bool) -> bytes:
    """The policy digest of PolicyPCR(sha256:0) or PolicyPassword, from a trial session."""
    trial = ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL,
                                   TPMT_SYM_DEF.parse("null"), TPM2_ALG.SHA256)
    if pcr:
        ctx.policy_pcr(trial, b"", TPML_PCR_SELECTION.parse("sha256:0"))
    else:
        ctx.policy_password(trial)
    digest = bytes(ctx.policy_get_digest(trial))
    ctx.flush_context(trial)
    return digest


@pytest.mark.parametrize("pcr", [True, False])
def test_pytss_unseal_with_policy(esapi: ESAPI, pcr: bool) -> None:
    """A sealed object whose authPolicy is PolicyPCR (userWithAuth clear) or PolicyPassword
    unseals in a policy session that satisfies it."""
    digest = policy_digest(esapi, pcr)
    item = esapi_sealed(esapi, auth=b"pw", policy=digest, attrs="fixedtpm|fixedparent|noda")
    session = esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                       TPMT_SYM_DEF.parse("aes128cfb"), TPM2_ALG.SHA256)
    if pcr:
        esapi.policy_pcr(session, b"", TPML_PCR_SELECTION.parse("sha256:0"))
    else:
        esapi.policy_password(session)
    assert bytes(esapi.unseal(item, session1=session)) == SECRET
    esapi.flush_context(session)
