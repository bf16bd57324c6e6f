"""tpm2-tools endorsement and attestation keys: ``tpm2_createek`` (the TCG EK Credential
Profile templates, RSA-2048 and ECC P-256, in the endorsement hierarchy) and ``tpm2_createak``
(a restricted signing key under the EK, created and loaded through policy sessions that use
PolicySecret(TPM_RH_ENDORSEMENT)); then ``tpm2_sign`` with the AK (a restricted key: the tool
gets a hash ticket from the TPM) and the signature is verified outside the TPM by ``openssl``
with the PEM of ``tpm2_readpublic -f pem``, and by ``cryptography`` with the public area in
ak.pub. On both emulators."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from emulator import Emulator
from objcmd import A
from swtpm_py.tpm.constants import ALG
from swtpm_py.tpm.objects_wire import parse_public

#: TCG EK Credential Profile §B.3.3: the EK's authPolicy, PolicySecret(TPM_RH_ENDORSEMENT).
EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
#: The EK's attributes in the profile's templates (Part 2 §8.3 bits).
EK_ATTRIBUTES = (A.FIXED_TPM | A.FIXED_PARENT | A.SENSITIVE_DATA_ORIGIN | A.ADMIN_WITH_POLICY
                 | A.RESTRICTED | A.DECRYPT)
MESSAGE = b"attest this\n"


def tool(emu: Emulator, cwd: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    """Run tpm2-tools' ``name`` against ``emu`` in ``cwd``; it must succeed. Without a resource
    manager the tools leave what they loaded in the TPM's three slots, so callers flush."""
    proc = subprocess.run([name, "-T", emu.tcti, *args], capture_output=True, timeout=60,
                          cwd=cwd)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def flush_all(emu: Emulator, cwd: Path) -> None:
    """Flush transient objects and sessions."""
    tool(emu, cwd, "tpm2_flushcontext", "-t")
    tool(emu, cwd, "tpm2_flushcontext", "-s")


def public_file(path: Path):
    """The TPMT_PUBLIC inside a TPM2B_PUBLIC file written by tpm2-tools (``-u``)."""
    return parse_public(path.read_bytes()[2:])


@pytest.mark.parametrize("alg", ["rsa", "ecc"])
def test_createek_createak_sign_verify(any_emulator: Emulator, tmp_path: Path,
                                       alg: str) -> None:
    emu, cwd = any_emulator, tmp_path
    (cwd / "msg.txt").write_bytes(MESSAGE)
    tool(emu, cwd, "tpm2_createek", "-c", "ek.ctx", "-G", alg, "-u", "ek.pub")
    flush_all(emu, cwd)
    ek = public_file(cwd / "ek.pub")
    assert ek.type == (ALG.RSA if alg == "rsa" else ALG.ECC)
    assert ek.objectAttributes == EK_ATTRIBUTES and ek.authPolicy == EK_POLICY
    # The EK is a Primary Object: the same template under the same EPS is the same key.
    tool(emu, cwd, "tpm2_createek", "-c", "ek-again.ctx", "-G", alg, "-u", "ek-again.pub")
    flush_all(emu, cwd)
    assert (cwd / "ek-again.pub").read_bytes() == (cwd / "ek.pub").read_bytes()

    scheme = "rsassa" if alg == "rsa" else "ecdsa"
    tool(emu, cwd, "tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", alg, "-g", "sha256",
         "-s", scheme, "-u", "ak.pub", "-n", "ak.name")
    flush_all(emu, cwd)
    ak_area = (cwd / "ak.pub").read_bytes()[2:]
    ak = parse_public(ak_area)
    assert ak.objectAttributes & (A.RESTRICTED | A.SIGN_ENCRYPT | A.FIXED_TPM) == (
        A.RESTRICTED | A.SIGN_ENCRYPT | A.FIXED_TPM)
    # Part 1 §16: Name = nameAlg || H(TPMT_PUBLIC); tpm2-tools writes the TPM's.
    assert (cwd / "ak.name").read_bytes() == b"\x00\x0b" + hashlib.sha256(ak_area).digest()

    tool(emu, cwd, "tpm2_sign", "-c", "ak.ctx", "-g", "sha256", "-f", "plain", "-o", "sig.bin",
         "msg.txt")
    flush_all(emu, cwd)
    tool(emu, cwd, "tpm2_readpublic", "-c", "ak.ctx", "-f", "pem", "-o", "ak.pem")
    flush_all(emu, cwd)
    check = subprocess.run(["openssl", "dgst", "-sha256", "-verify", "ak.pem", "-signature",
                            "sig.bin", "msg.txt"], cwd=cwd, capture_output=True, timeout=30)
    assert check.returncode == 0 and b"Verified OK" in check.stdout, check.stderr

    pem_key = serialization.load_pem_public_key((cwd / "ak.pem").read_bytes())
    signature = (cwd / "sig.bin").read_bytes()
    if alg == "rsa":
        key = rsa.RSAPublicNumbers(65537, int.from_bytes(ak.unique, "big")).public_key()
        assert pem_key.public_numbers() == key.public_numbers()
        key.verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
    else:
        key = ec.EllipticCurvePublicNumbers(int.from_bytes(ak.unique.x, "big"),
                                            int.from_bytes(ak.unique.y, "big"),
                                            ec.SECP256R1()).public_key()
        assert pem_key.public_numbers() == key.public_numbers()
        # tpm2-tools' "plain" ECDSA format is DER (openssl's); r || s would be 64 octets.
        if len(signature) == 64:
            signature = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                             int.from_bytes(signature[32:], "big"))
        key.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))
    # Another message does not verify: the check above can fail.
    with pytest.raises(Exception):
        if alg == "rsa":
            key.verify(signature, MESSAGE + b"x", padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signature, MESSAGE + b"x", ec.ECDSA(hashes.SHA256()))
