"""The DER (X.690) of TPM2_CertifyX509 (Part 3 §18.8): what the TPM reads in the caller's
partialCertificate and what it adds to make an RFC 5280 TBSCertificate.

The caller sends ``SEQUENCE { [signature AlgorithmIdentifier], issuer, validity, subject,
[3] extensions }``; the TPM adds the version ([0] INTEGER 2), a serialNumber derived from a
digest, the signature AlgorithmIdentifier when the caller left it out, and the
subjectPublicKeyInfo of the certified key (RFC 5280 §4.1). The TBSCertificate it signs is, in
this order, ``SEQUENCE { version, serialNumber, signature, issuer, validity, subject,
subjectPublicKeyInfo, extensions }``.

The reader follows the reference's ASN.1 unmarshaling (Part 4 TpmASN1.c, X509_spt.c, which
swtpm 0.7.1 runs): single-octet tags, lengths in short form or in one or two octets (below
0x8000), every length within the buffer; the extensions are searched for the keyUsage and the
TCG TPMA_OBJECT extensions by the first octets of each entry. A failure of the reader makes
every later read fail, as the reference's "size = -1" does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .constants import ALG, ECC_CURVE, RC
from .crypto import HASHES
from .errors import TpmError
from .objects_wire import ObjectAttr

if TYPE_CHECKING:
    from .objects import TpmObject

# ---------------------------------------------------------------------------- X.690 tags

INTEGER, BIT_STRING, OCTET_STRING, NULL, OBJECT_IDENTIFIER = 0x02, 0x03, 0x04, 0x05, 0x06
SEQUENCE = 0x30
#: [0] constructed (the version of a TBSCertificate; the hash of an RSASSA-PSS parameter).
CONTEXT_0 = 0xA0
#: [3] constructed: the extensions of a TBSCertificate (RFC 5280 §4.1).
EXTENSIONS = 0xA3

# ---------------------------------------------------------------------------- encoding


def length(n: int) -> bytes:
    """A DER length: short form below 128, else 0x81 or 0x82 and the octets."""
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82, n >> 8, n & 0xFF])


def tlv(tag: int, content: bytes) -> bytes:
    """A DER element: tag, length, content."""
    return bytes([tag]) + length(len(content)) + content


def integer(value: bytes) -> bytes:
    """A non-negative big-endian integer as an INTEGER: leading zero octets dropped, one added
    when the top bit is set (the reference's ASN1PushInteger(), which leaves an all-zero value
    with no content octets)."""
    value = value.lstrip(b"\0")
    if value and value[0] & 0x80:
        value = b"\0" + value
    return tlv(INTEGER, value)


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER (X.690 §8.19) from its dotted form."""
    arcs = [int(part) for part in dotted.split(".")]
    content = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        content += bytes(reversed(chunk))
    return tlv(OBJECT_IDENTIFIER, bytes(content))


def algorithm_identifier(algorithm: bytes) -> bytes:
    """``AlgorithmIdentifier { algorithm, NULL }`` (RFC 5280 §4.1.1.2)."""
    return tlv(SEQUENCE, algorithm + tlv(NULL, b""))


# ---------------------------------------------------------------------------- OIDs

OID_KEY_USAGE = oid("2.5.29.15")                      # RFC 5280 §4.2.1.3
OID_TCG_TPMA_OBJECT = oid("2.23.133.10.1.1.1")        # TCG: tcg-tpmaObject
OID_RSA_ENCRYPTION = oid("1.2.840.113549.1.1.1")      # RFC 8017 Appendix C
OID_RSASSA_PSS = oid("1.2.840.113549.1.1.10")
OID_MGF1 = oid("1.2.840.113549.1.1.8")
OID_EC_PUBLIC_KEY = oid("1.2.840.10045.2.1")          # RFC 5480 §2.1.1

#: The hash algorithms (RFC 8017 Appendix B.1, NIST CSOR).
HASH_OIDS = {ALG.SHA1: oid("1.3.14.3.2.26"), ALG.SHA256: oid("2.16.840.1.101.3.4.2.1"),
             ALG.SHA384: oid("2.16.840.1.101.3.4.2.2"),
             ALG.SHA512: oid("2.16.840.1.101.3.4.2.3")}
#: sha*WithRSAEncryption (RFC 8017 Appendix C).
RSASSA_OIDS = {ALG.SHA1: oid("1.2.840.113549.1.1.5"), ALG.SHA256: oid("1.2.840.113549.1.1.11"),
               ALG.SHA384: oid("1.2.840.113549.1.1.12"),
               ALG.SHA512: oid("1.2.840.113549.1.1.13")}
#: ecdsa-with-SHA* (RFC 5758 §3.2, RFC 3279 §2.2.3).
ECDSA_OIDS = {ALG.SHA1: oid("1.2.840.10045.4.1"), ALG.SHA256: oid("1.2.840.10045.4.3.2"),
              ALG.SHA384: oid("1.2.840.10045.4.3.3"), ALG.SHA512: oid("1.2.840.10045.4.3.4")}
#: The named curves (RFC 5480 §2.1.1.1); a curve without one has no subjectPublicKeyInfo.
CURVE_OIDS = {ECC_CURVE.NIST_P192: oid("1.2.840.10045.3.1.1"),
              ECC_CURVE.NIST_P224: oid("1.3.132.0.33"),
              ECC_CURVE.NIST_P256: oid("1.2.840.10045.3.1.7"),
              ECC_CURVE.NIST_P384: oid("1.3.132.0.34"),
              ECC_CURVE.NIST_P521: oid("1.3.132.0.35")}

# ---------------------------------------------------------------------------- key usage

#: TPMA_X509_KEY_USAGE (Part 2 §8.12): the KeyUsage BIT STRING left-justified in 32 bits,
#: digitalSignature in bit 31 down to decipherOnly in bit 23.
DIGITAL_SIGNATURE, NON_REPUDIATION, KEY_ENCIPHERMENT = 1 << 31, 1 << 30, 1 << 29
DATA_ENCIPHERMENT, KEY_AGREEMENT, KEY_CERT_SIGN = 1 << 28, 1 << 27, 1 << 26
CRL_SIGN, ENCIPHER_ONLY, DECIPHER_ONLY = 1 << 25, 1 << 24, 1 << 23
#: The uses that need TPMA_OBJECT sign, and those that need decrypt (Part 3 §18.8.1).
KEY_USAGE_SIGN = DIGITAL_SIGNATURE | KEY_CERT_SIGN | CRL_SIGN
KEY_USAGE_DECRYPT = (KEY_ENCIPHERMENT | DATA_ENCIPHERMENT | KEY_AGREEMENT | ENCIPHER_ONLY
                     | DECIPHER_ONLY)

# ---------------------------------------------------------------------------- reading


class Reader:
    """The reference's ASN1UnmarshalContext over ``data``: ``offset`` advances as tags and
    lengths are read; ``size`` becomes -1 on the first error and stays so."""

    def __init__(self, data: bytes, offset: int = 0, size: int | None = None) -> None:
        self.data = data
        self.offset = offset
        self.size = len(data) if size is None else size
        self.tag = 0xFF

    def copy(self) -> Reader:
        """An independent reader at the same place."""
        other = Reader(self.data, self.offset, self.size)
        other.tag = self.tag
        return other

    def _octet(self) -> int:
        if self.offset >= self.size:
            raise ValueError("beyond the end")
        value = self.data[self.offset]
        self.offset += 1
        return value

    def _fits(self, n: int) -> None:
        if self.offset + n > self.size:
            raise ValueError("beyond the end")

    def next_tag(self) -> int:
        """ASN1NextTag(): read a tag (single octet) and its length; return the length, or -1
        (and fail the reader) for a read beyond ``size``, a multi-octet tag, a length form
        other than short, 0x81 and 0x82 (below 0x8000), or a length beyond ``size``."""
        try:
            self.tag = self._octet()
        except ValueError:
            self.size, self.tag = -1, 0xFF
            return -1
        if self.tag & 0x1F == 0x1F:
            self.size, self.tag = -1, 0xFF
            return -1
        try:
            first = self._octet()
            if first < 0x80:
                n = first
            else:
                self._fits(first & 0x7F)
                if first == 0x81:
                    n = self._octet()
                elif first == 0x82:
                    high = self._octet()
                    if high >= 0x80:
                        raise ValueError("length beyond an INT16")
                    n = high << 8 | self._octet()
                else:
                    raise ValueError("unsupported length form")
            self._fits(n)
            return n
        except ValueError:
            # A bad length keeps the tag (the reference's ASN1DecodeLength()).
            self.size = -1
            return -1

    def bit_string_value(self) -> int | None:
        """ASN1GetBitStringValue(): a BIT STRING of up to 32 bits, left-justified in a
        UINT32; None (and the reader failed) if it is not one."""
        n = self.next_tag()
        try:
            if n < 1 or self.tag != BIT_STRING:
                raise ValueError("not a BIT STRING")
            unused = self._octet()
            n -= 1
            bits = 8 * n - unused
            if unused >= 8 or (n == 0 and unused != 0):
                raise ValueError("bad unused-bit count")
            value = 0
            for _ in range(n - 1):
                if value & 0xFF000000:
                    raise ValueError("more than 32 bits")
                value = (value << 8 | self._octet()) & 0xFFFFFFFF
            if n >= 1:
                if value & ((0xFF000000 << (8 - unused)) & 0xFFFFFFFF):
                    raise ValueError("more than 32 bits")
                value = ((value << (8 - unused)) + (self._octet() >> unused)) & 0xFFFFFFFF
            if bits > 0:
                # The reference shifts a UINT32 by (32 - bits): x86 takes the count mod 32.
                value = (value << ((32 - bits) & 31)) & 0xFFFFFFFF
            return value
        except ValueError:
            self.size = -1
            return None


@dataclass
class Partial:
    """The parts of a partialCertificate: the SEQUENCEs (issuer, validity, subject, with the
    signature AlgorithmIdentifier first when there are four) and the [3] extensions, each
    with its tag and length."""

    sequences: list[bytes]
    extensions: bytes


def split_partial(partial: bytes) -> Partial:
    """Unbundle partialCertificate as TPM2_CertifyX509() does: one SEQUENCE using all the
    octets (else TPM_RC_SIZE), inside it three or four SEQUENCEs and exactly one [3] in any
    order, nothing else (else TPM_RC_VALUE). Errors are unnumbered: the caller numbers them
    partialCertificate."""
    if not partial:
        raise TpmError(RC.VALUE, detail="empty partialCertificate")
    ctx = Reader(partial)
    n = ctx.next_tag()
    if ctx.tag != SEQUENCE or ctx.offset + n != len(partial):
        raise TpmError(RC.SIZE, detail="partialCertificate is not one SEQUENCE")
    sequences: list[bytes] = []
    extensions: bytes | None = None
    while ctx.offset < ctx.size:
        start = ctx.offset
        n = ctx.next_tag()
        if n < 0:
            break
        ctx.offset += n
        if ctx.tag == SEQUENCE:
            sequences.append(partial[start:ctx.offset])
            if len(sequences) > 4:
                break
        elif ctx.tag == EXTENSIONS and extensions is None:
            extensions = partial[start:ctx.offset]
        else:
            raise TpmError(RC.VALUE, detail=f"unexpected element 0x{ctx.tag:02x}")
    if ctx.offset != ctx.size or not 3 <= len(sequences) <= 4 or extensions is None:
        raise TpmError(RC.VALUE, detail="partialCertificate lacks or has too many parts")
    return Partial(sequences, extensions)


def _find_extension(ctx: Reader, wanted: bytes) -> tuple[Reader | None, bool]:
    """X509FindExtensionByOID(): search the extensions from ``ctx`` (not moved) for the entry
    whose content starts with the OID ``wanted``; (a reader over that entry, True), or
    (None, True) if there is none, or (None, False) for a malformed list."""
    search = ctx.copy()
    while search.size > search.offset:
        n = search.next_tag()
        if n < 0 or search.tag != SEQUENCE:
            return None, False
        start = search.offset
        if n >= len(wanted) and search.data[start:start + len(wanted)] == wanted:
            return Reader(search.data[start:start + n]), True
        search.offset += n
    return None, True


def _extension_bits(entry: Reader) -> int | None:
    """X509GetExtensionBits(): the BIT STRING inside the extension's OCTET STRING (the
    elements before it, the OID and the critical flag, are skipped)."""
    while True:
        n = entry.next_tag()
        if n <= 0 or entry.size <= entry.offset:
            return None
        if entry.tag == OCTET_STRING:
            return entry.bit_string_value()
        entry.offset += n


def check_extensions(attributes: int, extensions: bytes) -> None:
    """X509ProcessExtensions() (Part 3 §18.8.1): the TPMA_OBJECT extension, if present, must
    equal the key's attributes (TPM_RC_ATTRIBUTES: the caller numbers it objectHandle); the
    keyUsage extension is required and its uses need the key's attributes: signing uses
    sign, decryption uses decrypt, nonRepudiation fixedTPM, keyAgreement restricted
    (TPM_RC_VALUE). A malformed list is TPM_RC_VALUE.

    swtpm 0.7.1 (libtpms 0.9, measured) neither refuses the bits of TPMA_X509_KEY_USAGE
    below decipherOnly nor ties keyEncipherment to restricted (later references do both):
    it ties keyAgreement to restricted, and so does this TPM."""
    ctx = Reader(extensions)
    if ctx.next_tag() < 0 or ctx.tag != EXTENSIONS:
        raise TpmError(RC.VALUE, detail="no [3] extensions")
    if ctx.next_tag() < 0 or ctx.tag != SEQUENCE:
        raise TpmError(RC.VALUE, detail="the extensions are not a SEQUENCE")
    entry, well_formed = _find_extension(ctx, OID_TCG_TPMA_OBJECT)
    if entry is not None:
        value = _extension_bits(entry)
        if value is None:
            raise TpmError(RC.VALUE, detail="unreadable TPMA_OBJECT extension")
        if value != attributes:
            raise TpmError(RC.ATTRIBUTES, detail="TPMA_OBJECT extension differs")
    elif not well_formed:
        raise TpmError(RC.VALUE, detail="malformed extensions")
    entry, _ = _find_extension(ctx, OID_KEY_USAGE)
    usage = _extension_bits(entry) if entry is not None else None
    if usage is None:
        raise TpmError(RC.VALUE, detail="no readable keyUsage extension")
    bad = ((usage & KEY_USAGE_SIGN and not attributes & ObjectAttr.SIGN_ENCRYPT)
           or (usage & KEY_USAGE_DECRYPT and not attributes & ObjectAttr.DECRYPT)
           or (usage & NON_REPUDIATION and not attributes & ObjectAttr.FIXED_TPM)
           or (usage & KEY_AGREEMENT and not attributes & ObjectAttr.RESTRICTED))
    if bad:
        raise TpmError(RC.VALUE, detail="keyUsage not allowed by the key's attributes")


# ---------------------------------------------------------------------------- adding


def pss_salt_length(modulus_size: int, digest_size: int) -> int:
    """The salt of the TPM's RSASSA-PSS signatures (the reference's CryptRsaPssSaltSize()):
    as long as the digest, or what the modulus leaves room for (RFC 8017 §9.1.1)."""
    return max(0, min(digest_size, modulus_size - digest_size - 2))


def signing_algorithm(key: TpmObject, scheme: int, hash_alg: int) -> bytes | None:
    """X509AddSigningAlgorithm(): the signature AlgorithmIdentifier of ``key`` signing with
    ``scheme`` and ``hash_alg``, or None when the TPM has none (another key type or scheme,
    a hash without an OID)."""
    key_type = key.public.type
    if key_type == ALG.RSA and scheme == ALG.RSASSA and hash_alg in RSASSA_OIDS:
        return algorithm_identifier(RSASSA_OIDS[hash_alg])
    if key_type == ALG.RSA and scheme == ALG.RSAPSS and hash_alg in HASH_OIDS:
        if hash_alg == ALG.SHA1:
            # RFC 4055 §3.1: the default parameters (SHA-1) are left out.
            return algorithm_identifier(OID_RSASSA_PSS)
        # RSASSA-PSS-params: [0] hash, [1] MGF1 with the same hash, [2] salt length (the
        # TPM's: the digest size, or what the modulus leaves room for).
        digest_alg = algorithm_identifier(HASH_OIDS[hash_alg])
        salt = pss_salt_length(len(key.public.unique), HASHES[hash_alg].size)
        params = (tlv(CONTEXT_0, digest_alg)
                  + tlv(CONTEXT_0 + 1, tlv(SEQUENCE, OID_MGF1 + digest_alg))
                  + tlv(CONTEXT_0 + 2, integer(salt.to_bytes(4, "big"))))
        return tlv(SEQUENCE, OID_RSASSA_PSS + tlv(SEQUENCE, params))
    if key_type == ALG.ECC and scheme == ALG.ECDSA and hash_alg in ECDSA_OIDS:
        # RFC 5758 §3.2: the parameters are absent.
        return tlv(SEQUENCE, ECDSA_OIDS[hash_alg])
    return None


def can_encode_public_key(obj: TpmObject) -> bool:
    """Whether the TPM can make the subjectPublicKeyInfo of ``obj`` (an RSA key, or an ECC
    key on a curve with an OID)."""
    public = obj.public
    return public.type == ALG.RSA or (public.type == ALG.ECC
                                      and public.parameters.curveID in CURVE_OIDS)


def subject_public_key_info(obj: TpmObject) -> bytes:
    """X509AddPublicKey(): SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) of an RSA key
    (rsaEncryption with NULL parameters; RSAPublicKey { modulus, publicExponent }, RFC 8017
    Appendix A.1.1) or an ECC key (id-ecPublicKey and the named curve; the uncompressed point
    04 || x || y, RFC 5480 §2.2, with x and y as the public area holds them)."""
    public = obj.public
    if public.type == ALG.RSA:
        # Part 2 §12.2.3.5: an exponent of zero means 2^16 + 1.
        exponent = public.parameters.exponent or 0x10001
        key = tlv(SEQUENCE, integer(public.unique) + integer(exponent.to_bytes(4, "big")))
        return tlv(SEQUENCE, algorithm_identifier(OID_RSA_ENCRYPTION)
                   + tlv(BIT_STRING, b"\0" + key))
    point = b"\x04" + public.unique.x + public.unique.y
    algorithm = tlv(SEQUENCE, OID_EC_PUBLIC_KEY + CURVE_OIDS[public.parameters.curveID])
    return tlv(SEQUENCE, algorithm + tlv(BIT_STRING, b"\0" + point))
