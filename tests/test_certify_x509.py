"""TPM2_CertifyX509 (Part 3 §18.8): an X.509 certificate of a loaded key, signed by the TPM.

* In process: the partialCertificate, addedToCertificate and signature assembled into a
  certificate (RFC 5280 §4.1) here, parsed with ``cryptography.x509``: the signature verifies
  with the signing key, tbsDigest is the digest of the TBSCertificate, the subject public key
  is the certified key's, the serial number H_nameAlg(the TBS parts || Names)[:20].
* tpm2-tools' ``tpm2_certifyX509certutil`` makes the partial certificate and tpm2-pytss ESAPI
  sends the command, on both emulators: the assembled certificate verifies.
* Differential: the same raw commands to swtpm_py and swtpm 0.7.1 with the same external keys:
  the same response codes for valid and invalid partial certificates, keys and schemes, and
  byte-identical addedToCertificate and tbsDigest (and RSASSA/HMAC signatures).
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from pathlib import Path

from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
from tpm2_pytss.types import TPM2B_PUBLIC, TPMT_SIG_SCHEME

from emulator import Emulator
from objcmd import (A, NULL_SYM, SIGNING, authed, b2, create_primary, ecc_template, flush,
                    parse_create_primary, pw, rc)
from test_signing import (ECC_KEYS, EXTERNAL_SIGNING, RSA_KEY, ecc_public, ecc_sensitive,
                          hmac_public, hmac_sensitive, loaded, rsa_public, rsa_sensitive,
                          scheme)

from swtpm_py.tpm import Tpm
from swtpm_py.tpm.constants import ALG, CC, RH

H1, H2, P1, P2, P3 = 0x100, 0x200, 0x140, 0x240, 0x340
TPM_RC_VALUE, TPM_RC_SIZE, TPM_RC_KEY, TPM_RC_SCHEME = 0x084, 0x095, 0x09C, 0x092
TPM_RC_ASYMMETRIC, TPM_RC_ATTRIBUTES = 0x081, 0x082

# ---------------------------------------------------------------------------- DER, test side


def der(tag: int, content: bytes) -> bytes:
    """A DER element (definite length, short or long form)."""
    n = len(content)
    if n < 0x80:
        size = bytes([n])
    else:
        octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
        size = bytes([0x80 | len(octets)]) + octets
    return bytes([tag]) + size + content


def elements(data: bytes) -> list[bytes]:
    """The top-level DER elements (tag, length and content each) of ``data``."""
    out = []
    i = 0
    while i < len(data):
        first = data[i + 1]
        if first < 0x80:
            start, n = i + 2, first
        else:
            count = first & 0x7F
            start, n = i + 2 + count, int.from_bytes(data[i + 2:i + 2 + count], "big")
        out.append(data[i:start + n])
        i = start + n
    return out


def content(element: bytes) -> bytes:
    """The content octets of one DER element."""
    header = 2 + (element[1] & 0x7F if element[1] & 0x80 else 0)
    return element[header:]


KU_OID = bytes.fromhex("0603551d0f")
TPMA_OID = bytes.fromhex("06076781050a010101")
ISSUER = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "swtpm_py test CA")])
SUBJECT = cx509.Name([cx509.NameAttribute(NameOID.ORGANIZATION_NAME, "swtpm_py"),
                      cx509.NameAttribute(NameOID.COMMON_NAME, "certified key")])
VALIDITY = der(0x30, der(0x17, b"260101000000Z") + der(0x17, b"360101000000Z"))
#: KeyUsage digitalSignature (a signing key's).
DIGITAL_SIGNATURE = der(0x03, b"\x07\x80")


def extension(oid: bytes, value: bytes, critical: bool = False) -> bytes:
    """Extension { extnID, critical, extnValue OCTET STRING }."""
    return der(0x30, oid + (b"\x01\x01\xff" if critical else b"") + der(0x04, value))


def extensions(*entries: bytes) -> bytes:
    """[3] { SEQUENCE OF Extension }."""
    return der(0xA3, der(0x30, b"".join(entries)))


def key_usage(bits: bytes = DIGITAL_SIGNATURE) -> bytes:
    return extension(KU_OID, bits, critical=True)


def tpma_object(attributes: int) -> bytes:
    """The TCG TPMA_OBJECT extension: the attributes as a 32-bit BIT STRING."""
    return extension(TPMA_OID, der(0x03, b"\x00" + attributes.to_bytes(4, "big")))


def partial(*parts: bytes, ext: bytes | None = None) -> bytes:
    """partialCertificate: issuer, validity, subject (or ``parts``) and the extensions."""
    body = b"".join(parts or (ISSUER.public_bytes(), VALIDITY, SUBJECT.public_bytes()))
    return der(0x30, body + (extensions(key_usage()) if ext is None else ext))


# ---------------------------------------------------------------------------- command


def u32(*values: int) -> bytes:
    return b"".join(struct.pack(">I", v) for v in values)


def certify_x509(obj: int, signer: int, partial_cert: bytes, in_scheme: bytes = scheme(),
                 reserved: bytes = b"") -> bytes:
    return authed(CC.CertifyX509, u32(obj, signer),
                  b2(reserved) + in_scheme + b2(partial_cert), pw(), pw())


def parse_response(response: bytes) -> tuple[bytes, bytes, bytes]:
    """(addedToCertificate, tbsDigest, marshalled TPMT_SIGNATURE)."""
    assert rc(response) == 0, hex(rc(response))
    size = struct.unpack_from(">I", response, 10)[0]
    params = response[14:14 + size]
    n = struct.unpack_from(">H", params)[0]
    added = params[2:2 + n]
    m = struct.unpack_from(">H", params, 2 + n)[0]
    digest = params[4 + n:4 + n + m]
    return added, digest, params[4 + n + m:]


def signature_value(signature: bytes) -> bytes:
    """The BIT STRING value of a certificate's signature (RFC 3279 §2.2: RSA octets as they
    are, ECDSA as SEQUENCE { r, s })."""
    alg = struct.unpack_from(">H", signature)[0]
    if alg in (ALG.RSASSA, ALG.RSAPSS):
        return signature[6:]
    assert alg == ALG.ECDSA
    n = struct.unpack_from(">H", signature, 4)[0]
    r = int.from_bytes(signature[6:6 + n], "big")
    s = int.from_bytes(signature[8 + n:], "big")
    return encode_dss_signature(r, s)


def assemble(partial_cert: bytes, added: bytes, signature: bytes) -> bytes:
    """The certificate (Part 3 §18.8.1): TBSCertificate { version, serialNumber (added),
    signature (partial or added), issuer, validity, subject (partial), subjectPublicKeyInfo
    (added), extensions (partial) }, the signature algorithm again, the signature."""
    given = elements(content(partial_cert))
    sequences = [e for e in given if e[0] == 0x30]
    ext = [e for e in given if e[0] == 0xA3]
    tpm_parts = elements(content(added))
    version, serial = tpm_parts[:2]
    public_key = tpm_parts[-1]
    algorithm = tpm_parts[2] if len(tpm_parts) == 4 else sequences[0]
    tbs = der(0x30, version + serial + algorithm + b"".join(sequences[-3:]) + public_key
              + b"".join(ext))
    return der(0x30, tbs + algorithm + der(0x03, b"\x00" + signature_value(signature)))


def check_certificate(cert_der: bytes, signer_key, tbs_digest: bytes, certified_key) -> \
        cx509.Certificate:
    """Parse the certificate and assert what a relying party checks."""
    cert = cx509.load_der_x509_certificate(cert_der)
    assert cert.version == cx509.Version.v3
    hash_alg = cert.signature_hash_algorithm
    assert hashlib.new(hash_alg.name, cert.tbs_certificate_bytes).digest() == tbs_digest
    # The padding (PKCS #1 v1.5, or PSS with the certificate's MGF1 hash and salt length) or
    # the ECDSA hash, as the certificate's signature AlgorithmIdentifier names them.
    params = cert.signature_algorithm_parameters
    if isinstance(signer_key, rsa.RSAPublicKey):
        signer_key.verify(cert.signature, cert.tbs_certificate_bytes, params, hash_alg)
    else:
        assert isinstance(params, ec.ECDSA)
        signer_key.verify(cert.signature, cert.tbs_certificate_bytes, params)
    assert cert.public_key().public_numbers() == certified_key.public_numbers()
    return cert


# ---------------------------------------------------------------------------- in process


def test_rsa_and_ecc_certificates_verify(tpm: Tpm) -> None:
    """An ECC key certified by an RSA key (RSASSA-SHA256, algorithm identifier added by the
    TPM), by RSASSA-PSS-SHA256, and an RSA key by an ECC key (ECDSA-SHA384): the assembled
    certificates parse and verify; the serial number is H_nameAlg(signature || issuer ||
    validity || subject || subjectPublicKeyInfo || extensions || Name(signKey) ||
    Name(object))[:20]."""
    ex = tpm.execute
    ecc_key = ECC_KEYS[3]
    obj, obj_name = loaded(ex, ecc_public(ecc_key, 3), ecc_sensitive(ecc_key))
    signer, signer_name = loaded(ex, rsa_public(RSA_KEY), rsa_sensitive(RSA_KEY))
    cert_partial = partial()
    added, tbs_digest, signature = parse_response(
        ex(certify_x509(obj, signer, cert_partial, scheme(ALG.RSASSA, ALG.SHA256))))
    assert struct.unpack_from(">HH", signature) == (ALG.RSASSA, ALG.SHA256)
    cert = check_certificate(assemble(cert_partial, added, signature), RSA_KEY.public_key(),
                             tbs_digest, ecc_key.public_key())
    assert cert.issuer == ISSUER and cert.subject == SUBJECT
    assert cert.extensions.get_extension_for_class(cx509.KeyUsage).value.digital_signature
    tpm_parts = elements(content(added))
    body = (tpm_parts[2] + ISSUER.public_bytes() + VALIDITY + SUBJECT.public_bytes()
            + tpm_parts[3] + extensions(key_usage()))
    serial = hashlib.sha256(body + signer_name + obj_name).digest()[:20]
    assert cert.serial_number == int.from_bytes(serial, "big")

    # RSASSA-PSS: the TPM names the hash, MGF1 and its salt length (RFC 4055 §3.1).
    added, tbs_digest, signature = parse_response(
        ex(certify_x509(obj, signer, cert_partial, scheme(ALG.RSAPSS, ALG.SHA256))))
    cert = check_certificate(assemble(cert_partial, added, signature), RSA_KEY.public_key(),
                             tbs_digest, ecc_key.public_key())
    assert isinstance(cert.signature_algorithm_parameters, padding.PSS)
    for handle in (obj, signer):
        assert rc(ex(flush(handle))) == 0

    ecc_signer = ECC_KEYS[4]
    obj, _ = loaded(ex, rsa_public(RSA_KEY), rsa_sensitive(RSA_KEY))
    signer, _ = loaded(ex, ecc_public(ecc_signer, 4), ecc_sensitive(ecc_signer))
    added, tbs_digest, signature = parse_response(
        ex(certify_x509(obj, signer, cert_partial, scheme(ALG.ECDSA, ALG.SHA384))))
    cert = check_certificate(assemble(cert_partial, added, signature), ecc_signer.public_key(),
                             tbs_digest, RSA_KEY.public_key())
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)


def test_caller_signature_algorithm_and_extensions(tpm: Tpm) -> None:
    """With four SEQUENCEs the first is the caller's signature algorithm: the TPM adds none.
    A TPMA_OBJECT extension equal to the key's attributes passes; a different one is
    TPM_RC_ATTRIBUTES on objectHandle (H2, as swtpm 0.7.1 numbers it); keyUsage is required
    (TPM_RC_VALUE + P3). TPM_RH_NULL as signHandle (which swtpm 0.7.1 takes, and then dies of)
    is TPM_RC_KEY on signHandle (H1, swtpm's numbering) with or without the algorithm."""
    ex = tpm.execute
    obj, _ = loaded(ex, ecc_public(ECC_KEYS[3], 3), ecc_sensitive(ECC_KEYS[3]))
    signer, _ = loaded(ex, rsa_public(RSA_KEY, key_scheme=scheme(ALG.RSASSA, ALG.SHA512)),
                       rsa_sensitive(RSA_KEY))
    sha512_rsa = der(0x30, bytes.fromhex("06092a864886f70d01010d") + b"\x05\x00")
    cert_partial = partial(sha512_rsa, ISSUER.public_bytes(), VALIDITY, SUBJECT.public_bytes(),
                           ext=extensions(tpma_object(EXTERNAL_SIGNING), key_usage()))
    added, tbs_digest, signature = parse_response(ex(certify_x509(obj, signer, cert_partial)))
    assert len(elements(content(added))) == 3
    cert = check_certificate(assemble(cert_partial, added, signature), RSA_KEY.public_key(),
                             tbs_digest, ECC_KEYS[3].public_key())
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA512)
    wrong = partial(ext=extensions(tpma_object(EXTERNAL_SIGNING | A.FIXED_TPM), key_usage()))
    assert rc(ex(certify_x509(obj, signer, wrong))) == TPM_RC_ATTRIBUTES + H2
    no_usage = partial(ext=extensions(tpma_object(EXTERNAL_SIGNING)))
    assert rc(ex(certify_x509(obj, signer, no_usage))) == TPM_RC_VALUE + P3
    for cert in (partial(), cert_partial):
        assert rc(ex(certify_x509(obj, RH.NULL, cert, scheme(ALG.RSASSA, ALG.SHA256)))) == \
            TPM_RC_KEY + H1


# ---------------------------------------------------------------------------- tools, pytss


def test_tools_partial_certificate_certified_with_pytss(any_emulator: Emulator,
                                                        tmp_path: Path) -> None:
    """tpm2_certifyX509certutil's partial certificate (keyUsage digitalSignature, keyCertSign,
    cRLSign), ESAPI CertifyX509 of an ECC signing key by an RSASSA key made by CreatePrimary:
    the assembled certificate verifies and names the key."""
    out = tmp_path / "partial.der"
    subprocess.run(["tpm2_certifyX509certutil", "-o", str(out), "-d", "30"], check=True,
                   env=dict(os.environ, TPM2TOOLS_TCTI=any_emulator.tcti), timeout=30)
    cert_partial = out.read_bytes()
    with ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={any_emulator.port}")) as esys:
        signing = TPM2B_PUBLIC.parse(
            "rsa2048:rsassa-sha256:null",
            objectAttributes="sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda")
        signer, signer_public, _, _, _ = esys.create_primary(None, signing, ESYS_TR.OWNER)
        certified = TPM2B_PUBLIC.parse(
            "ecc256:ecdsa-sha256:null",
            objectAttributes="sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda")
        obj, obj_public, _, _, _ = esys.create_primary(None, certified, ESYS_TR.OWNER)
        added, tbs_digest, signature = esys.certify_x509(
            obj, signer, cert_partial, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
        marshalled = signature.marshal()
    n = int.from_bytes(bytes(signer_public.publicArea.unique.rsa), "big")
    signer_key = rsa.RSAPublicNumbers(65537, n).public_key()
    point = obj_public.publicArea.unique.ecc
    certified_key = ec.EllipticCurvePublicNumbers(
        int.from_bytes(bytes(point.x), "big"), int.from_bytes(bytes(point.y), "big"),
        ec.SECP256R1()).public_key()
    cert = check_certificate(assemble(cert_partial, bytes(added), marshalled), signer_key,
                             bytes(tbs_digest), certified_key)
    usage = cert.extensions.get_extension_for_class(cx509.KeyUsage).value
    assert (usage.digital_signature, usage.key_cert_sign, usage.crl_sign) == (True, True, True)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "example"


# ---------------------------------------------------------------------------- differential


def test_codes_and_outputs_as_swtpm(pair: dict[str, Emulator]) -> None:
    """The same commands to both TPMs with the same external keys (same Names): the same
    response codes, and byte-identical addedToCertificate and tbsDigest (and signature when
    deterministic)."""
    rsa_pub, rsa_sens = rsa_public(RSA_KEY), rsa_sensitive(RSA_KEY)
    rsassa_pub = rsa_public(RSA_KEY, key_scheme=scheme(ALG.RSASSA, ALG.SHA256))
    p256 = (ecc_public(ECC_KEYS[3], 3), ecc_sensitive(ECC_KEYS[3]))
    p384 = (ecc_public(ECC_KEYS[4], 4), ecc_sensitive(ECC_KEYS[4]))
    hmac = (hmac_public(), hmac_sensitive())
    decrypt_attrs = A.DECRYPT | A.USER_WITH_AUTH | A.NO_DA
    rsa_decrypt = (rsa_public(RSA_KEY, attrs=decrypt_attrs), rsa_sens)
    good = partial()
    with_alg = partial(der(0x30, bytes.fromhex("06092a864886f70d01010b0500")),
                       ISSUER.public_bytes(), VALIDITY, SUBJECT.public_bytes())
    name, ku = ISSUER.public_bytes(), extensions(key_usage())
    cases: list[tuple[str, tuple, tuple, bytes, bytes, bytes]] = [
        # (what, object, signer, partialCertificate, inScheme, reserved)
        ("rsa by rsassa", (rsa_pub, rsa_sens), (rsassa_pub, rsa_sens), good, scheme(), b""),
        # A public-only object has no authValue, not even for the ADMIN role: AUTH_UNAVAILABLE.
        ("public only object", (rsa_pub, b""), (rsassa_pub, rsa_sens), good, scheme(), b""),
        ("ecc by rsassa", p256, (rsa_pub, rsa_sens), good, scheme(ALG.RSASSA, ALG.SHA256), b""),
        ("sha1", p256, (rsa_pub, rsa_sens), good, scheme(ALG.RSASSA, ALG.SHA1), b""),
        ("sha384", p384, (rsa_pub, rsa_sens), good, scheme(ALG.RSASSA, ALG.SHA384), b""),
        ("sha512", p256, (rsa_pub, rsa_sens), good, scheme(ALG.RSASSA, ALG.SHA512), b""),
        ("pss sha256", p256, (rsa_pub, rsa_sens), good, scheme(ALG.RSAPSS, ALG.SHA256), b""),
        ("pss sha1", p256, (rsa_pub, rsa_sens), good, scheme(ALG.RSAPSS, ALG.SHA1), b""),
        ("pss given alg", p256, (rsa_pub, rsa_sens), with_alg,
         scheme(ALG.RSAPSS, ALG.SHA256), b""),
        ("ecdsa", (rsa_pub, rsa_sens), p256, good, scheme(ALG.ECDSA, ALG.SHA256), b""),
        ("schnorr", (rsa_pub, rsa_sens), p256, good, scheme(ALG.ECSCHNORR, ALG.SHA256), b""),
        ("schnorr given alg", (rsa_pub, rsa_sens), p256, with_alg,
         scheme(ALG.ECSCHNORR, ALG.SHA256), b""),
        ("given alg", p256, (rsassa_pub, rsa_sens), with_alg, scheme(), b""),
        ("hmac signer", p256, hmac, good, scheme(), b""),
        ("hmac given alg", p256, hmac, with_alg, scheme(), b""),
        ("self", (rsassa_pub, rsa_sens), None, good, scheme(), b""),
        ("reserved", p256, (rsassa_pub, rsa_sens), good, scheme(), b"x"),
        ("no scheme", p256, (rsa_pub, rsa_sens), good, scheme(), b""),
        ("decrypt signer", p256, rsa_decrypt, good, scheme(ALG.RSASSA, ALG.SHA256), b""),
        ("hmac object", hmac, (rsassa_pub, rsa_sens), good, scheme(), b""),
        ("empty", p256, (rsassa_pub, rsa_sens), b"", scheme(), b""),
        ("set", p256, (rsassa_pub, rsa_sens), b"\x31" + good[1:], scheme(), b""),
        ("trailing", p256, (rsassa_pub, rsa_sens), good + b"\x00", scheme(), b""),
        ("short", p256, (rsassa_pub, rsa_sens), good[:-1], scheme(), b""),
        ("length 0x83", p256, (rsassa_pub, rsa_sens), b"\x30\x83\x00\x00\x03\x05\x00",
         scheme(), b""),
        ("two sequences", p256, (rsassa_pub, rsa_sens), partial(name, VALIDITY), scheme(), b""),
        ("five sequences", p256, (rsassa_pub, rsa_sens),
         partial(name, name, name, VALIDITY, name), scheme(), b""),
        ("no extensions", p256, (rsassa_pub, rsa_sens), der(0x30, name + VALIDITY + name),
         scheme(), b""),
        ("two extensions", p256, (rsassa_pub, rsa_sens), partial(name, VALIDITY, name + ku),
         scheme(), b""),
        ("extensions first", p256, (rsassa_pub, rsa_sens),
         der(0x30, ku + name + VALIDITY + name), scheme(), b""),
        ("issuerUniqueID", p256, (rsassa_pub, rsa_sens),
         partial(name, VALIDITY, name + der(0xA1, b"\x03\x01\x00")), scheme(), b""),
        ("integer", p256, (rsassa_pub, rsa_sens), partial(b"\x02\x01\x01", name, VALIDITY, name),
         scheme(), b""),
        ("no key usage", p256, (rsassa_pub, rsa_sens), partial(ext=extensions()), scheme(), b""),
        ("usage not in sequence", p256, (rsassa_pub, rsa_sens),
         partial(ext=der(0xA3, der(0x31, key_usage()))), scheme(), b""),
        ("usage bad entry", p256, (rsassa_pub, rsa_sens),
         partial(ext=extensions(b"\x04\x00", key_usage())), scheme(), b""),
        ("usage not bit string", p256, (rsassa_pub, rsa_sens),
         partial(ext=extensions(extension(KU_OID, b"\x04\x01\x80"))), scheme(), b""),
        ("usage 9 bits", p256, (rsassa_pub, rsa_sens),
         partial(ext=extensions(key_usage(der(0x03, b"\x07\x80\x80")))), scheme(), b""),
        ("usage reserved bit", p256, (rsassa_pub, rsa_sens),
         partial(ext=extensions(key_usage(der(0x03, b"\x06\x80\x40")))), scheme(), b""),
        ("usage 33 bits", p256, (rsassa_pub, rsa_sens),
         partial(ext=extensions(key_usage(der(0x03, b"\x07\x80\x00\x00\x00\x80")))),
         scheme(), b""),
        ("usage empty", p256, (rsassa_pub, rsa_sens),
         partial(ext=extensions(key_usage(der(0x03, b"\x00")))), scheme(), b""),
        ("nonRepudiation", p256, (rsassa_pub, rsa_sens),
         partial(ext=extensions(key_usage(der(0x03, b"\x06\x40")))), scheme(), b""),
        ("keyEncipherment", rsa_decrypt, (rsassa_pub, rsa_sens),
         partial(ext=extensions(key_usage(der(0x03, b"\x05\x20")))), scheme(), b""),
        ("keyAgreement", rsa_decrypt, (rsassa_pub, rsa_sens),
         partial(ext=extensions(key_usage(der(0x03, b"\x03\x08")))), scheme(), b""),
        ("dataEncipherment", rsa_decrypt, (rsassa_pub, rsa_sens),
         partial(ext=extensions(key_usage(der(0x03, b"\x04\x10")))), scheme(), b""),
        ("dataEncipherment signing key", p256, (rsassa_pub, rsa_sens),
         partial(ext=extensions(key_usage(der(0x03, b"\x04\x10")))), scheme(), b""),
        ("signing usage decrypt key", rsa_decrypt, (rsassa_pub, rsa_sens), good, scheme(),
         b""),
        ("tpma equal", p256, (rsassa_pub, rsa_sens),
         partial(ext=extensions(key_usage(), tpma_object(EXTERNAL_SIGNING))), scheme(), b""),
        ("tpma differs", p256, (rsassa_pub, rsa_sens),
         partial(ext=extensions(tpma_object(EXTERNAL_SIGNING | A.DECRYPT), key_usage())),
         scheme(), b""),
        ("tpma unreadable", p256, (rsassa_pub, rsa_sens),
         partial(ext=extensions(extension(TPMA_OID, b"\x05\x00"), key_usage())),
         scheme(), b""),
        ("tpma short", p256, (rsassa_pub, rsa_sens),
         partial(ext=extensions(extension(TPMA_OID, der(0x03, b"\x00\x00\x04")), key_usage())),
         scheme(), b""),
    ]
    results: dict[str, list] = {}
    for kind, emu in pair.items():
        ex = emu.command
        out: list = []
        for what, obj_keys, signer_keys, cert, in_scheme, reserved in cases:
            handles = []
            obj_pub, obj_sens = obj_keys
            obj, _ = loaded(ex, obj_pub, obj_sens)
            handles.append(obj)
            signer = obj
            if signer_keys is not None:
                signer, _ = loaded(ex, *signer_keys)
                handles.append(signer)
            response = ex(certify_x509(obj, signer, cert, in_scheme, reserved))
            entry: list = [what, hex(rc(response))]
            if rc(response) == 0:
                added, tbs_digest, signature = parse_response(response)
                entry += [added.hex(), tbs_digest.hex(), signature[:4].hex()]
                if struct.unpack_from(">H", signature)[0] in (ALG.RSASSA, ALG.HMAC):
                    entry.append(signature.hex())
            out.append(entry)
            for handle in handles:
                assert rc(ex(flush(handle))) == 0
        # An ECC key on a curve without an OID (BN P256): no subjectPublicKeyInfo.
        bn = parse_create_primary(ex(create_primary(
            ecc_template(SIGNING | A.NO_DA, NULL_SYM, curve=0x10), RH.OWNER)))["handle"]
        signer, _ = loaded(ex, rsassa_pub, rsa_sens)
        out.append(["bn curve", hex(rc(ex(certify_x509(bn, signer, good))))])
        out.append(["null signer", hex(rc(ex(certify_x509(bn, RH.NULL, good))))])
        for handle in (bn, signer):
            assert rc(ex(flush(handle))) == 0
        results[kind] = out
    differences = [(ours, theirs) for ours, theirs in zip(results["swtpm_py"], results["swtpm"])
                   if ours != theirs]
    assert not differences, "\n".join(f"{a[:2]} {b[:2]}" for a, b in differences)
    codes = {entry[0]: int(entry[1], 16) for entry in results["swtpm"]}
    # What swtpm 0.7.1 does, asserted for both (measured). It numbers objectHandle H2 and
    # signHandle H1; it takes TPMA_X509_KEY_USAGE's low bits and keyEncipherment of an
    # unrestricted key, but not keyAgreement.
    assert codes["rsa by rsassa"] == codes["given alg"] == codes["tpma equal"] == 0
    assert codes["pss sha256"] == codes["schnorr given alg"] == codes["extensions first"] == 0
    assert codes["usage reserved bit"] == codes["keyEncipherment"] == 0
    assert codes["keyAgreement"] == codes["nonRepudiation"] == TPM_RC_VALUE + P3
    assert codes["reserved"] == TPM_RC_SIZE + P1
    assert codes["decrypt signer"] == TPM_RC_KEY + H1
    assert codes["no scheme"] == TPM_RC_SCHEME + P2
    assert codes["hmac signer"] == codes["schnorr"] == TPM_RC_SCHEME + H1
    assert codes["hmac object"] == codes["bn curve"] == TPM_RC_ASYMMETRIC + H2
    assert codes["set"] == codes["trailing"] == TPM_RC_SIZE + P3
    assert codes["two sequences"] == codes["no key usage"] == TPM_RC_VALUE + P3
    assert codes["tpma differs"] == TPM_RC_ATTRIBUTES + H2
