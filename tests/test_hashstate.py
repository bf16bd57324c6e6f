"""swtpm_py.tpm.hashstate: SHA-1/256/384/512 and HMAC from FIPS 180-4 / RFC 2104 with an
exportable state — golden vectors of FIPS 180-4 (NIST's examples), RFC 2202 and RFC 4231,
and equality with hashlib/hmac on random data split anywhere, across export and restore."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swtpm_py.tpm import hashstate

ABC = b"abc"
#: FIPS 180-4 examples: the 448-bit (two-block for SHA-1/256) and 896-bit messages.
M448 = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
M896 = (b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
        b"ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu")

#: NIST's published digests of the examples above.
GOLDEN = [
    ("sha1", ABC, "a9993e364706816aba3e25717850c26c9cd0d89d"),
    ("sha1", M448, "84983e441c3bd26ebaae4aa1f95129e5e54670f1"),
    ("sha256", ABC, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ("sha256", M448, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    ("sha384", ABC, "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
                    "8086072ba1e7cc2358baeca134c825a7"),
    ("sha384", M896, "09330c33f71147e83d192fc782cd1b4753111b173b3b05d22fa08086e3b0f712"
                     "fcc7c71a557e2db966c3e9fa91746039"),
    ("sha512", ABC, "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"),
    ("sha512", M896, "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
                     "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"),
]

#: RFC 2202 (HMAC-SHA-1) and RFC 4231 (HMAC-SHA-2) test cases 1, 2 and 6 (key larger than
#: a block: hashed first).
BIG_KEY = b"\xaa" * 131
BIG_TEXT = b"Test Using Larger Than Block-Size Key - Hash Key First"
HMAC_GOLDEN = [
    ("sha1", b"\x0b" * 20, b"Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
    ("sha1", b"Jefe", b"what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    ("sha256", b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    ("sha256", b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ("sha256", BIG_KEY, BIG_TEXT,
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    ("sha384", b"\x0b" * 20, b"Hi There",
     "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
     "faea9ea9076ede7f4af152e8b2fa9cb6"),
    ("sha512", b"\x0b" * 20, b"Hi There",
     "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
     "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"),
    ("sha512", BIG_KEY, BIG_TEXT,
     "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
     "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"),
]

NAMES = list(hashstate.ALGORITHMS)


@pytest.mark.parametrize("name, message, digest", GOLDEN)
def test_fips_180_4_examples(name: str, message: bytes, digest: str) -> None:
    """The FIPS 180-4 example messages hash to NIST's digests, in one piece or octet by
    octet."""
    assert hashstate.Hash(name, message).hexdigest() == digest
    h = hashstate.Hash(name)
    for i in range(len(message)):
        h.update(message[i:i + 1])
    assert h.hexdigest() == digest


def test_million_a() -> None:
    """FIPS 180-4 / NIST's long message: one million 'a' (SHA-1, the fastest here)."""
    h = hashstate.Hash("sha1")
    chunk = b"a" * 10_000
    for _ in range(100):
        h.update(chunk)
    assert h.hexdigest() == "34aa973cd4c4daa4f61eeb2bdbad27316534016f"


@pytest.mark.parametrize("name, key, text, mac", HMAC_GOLDEN)
def test_hmac_rfc_vectors(name: str, key: bytes, text: bytes, mac: str) -> None:
    """RFC 2202 / RFC 4231 HMAC vectors, also across an export and a restore of the inner
    keyed state."""
    assert hashstate.Hmac(name, key, text).hexdigest() == mac
    first = hashstate.Hmac(name, key, text[:5])
    again = hashstate.restore_hmac(name, key, first.export())
    again.update(text[5:])
    assert again.hexdigest() == mac


@pytest.mark.parametrize("name", NAMES)
def test_padding_boundaries(name: str) -> None:
    """Every length around one and two blocks (where the length field spills into an extra
    block) gives hashlib's digest."""
    block = hashstate.ALGORITHMS[name].block_size
    for n in range(block - 20, 2 * block + 2):
        data = bytes((i * 7) & 0xFF for i in range(n))
        assert hashstate.Hash(name, data).digest() == hashlib.new(name, data).digest()


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(NAMES), data=st.binary(max_size=700),
       cut=st.integers(min_value=0, max_value=700), align=st.sampled_from([None, 128, 256]),
       key=st.binary(max_size=200))
def test_export_restore_equals_hashlib(name: str, data: bytes, cut: int, align: int | None,
                                       key: bytes) -> None:
    """Hash the first part, export, restore into a new hasher, hash the rest: hashlib's
    digest (and hmac's for the keyed variant); the exported state is the chaining value's
    fixed size, whatever was hashed, with fewer pending octets than the alignment."""
    cut = min(cut, len(data))
    h = hashstate.Hash(name, data[:cut], align=align)
    state = h.export()
    assert len(state.chain) == hashstate.ALGORITHMS[name].state_size
    assert len(state.pending) < (align or hashstate.ALGORITHMS[name].block_size)
    assert state.compressed + len(state.pending) == cut
    again = hashstate.restore(name, state, align)
    copy = again.copy()
    again.update(data[cut:])
    assert again.digest() == hashlib.new(name, data).digest()
    # A copy is independent of the hasher it was taken from.
    assert copy.digest() == hashlib.new(name, data[:cut]).digest()
    mac = hashstate.Hmac(name, key, data[:cut], align=align)
    resumed = hashstate.restore_hmac(name, key, mac.export(), align)
    resumed.update(data[cut:])
    assert resumed.digest() == hmac.new(key, data, name).digest()


def test_restore_refuses_bad_states() -> None:
    """A chaining value of the wrong size, or a state not on the alignment, is refused."""
    good = hashstate.Hash("sha256", b"x" * 200, align=128).export()
    with pytest.raises(ValueError):
        hashstate.restore("sha512", good, 128)
    with pytest.raises(ValueError):
        hashstate.restore("sha256", good, 256)
    with pytest.raises(ValueError):
        hashstate.Hash("sha512", align=64)
