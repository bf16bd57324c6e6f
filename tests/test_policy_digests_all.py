"""The policy digest of every policy command, four ways (Part 3 §23, Part 1 §19.7.2).

For each policy command, on swtpm_py *and* on the real swtpm 0.7.1:

* tpm2-tools' policy tool in a session started by ``tpm2_startauthsession`` (the digest the
  tool writes with ``-L``);
* tpm2-pytss ESAPI ``policy_*`` in a session from ``start_auth_session(TPM2_SE.TRIAL)``;
* and, once, the update formulas of Part 3 computed here with hashlib (Names computed here
  from the public areas built here);

with sessions of SHA-1, SHA-256 and SHA-384 (every digest argument of the session's size).

All must be the same octets. tests/test_policy.py runs the tools against the real swtpm only;
here the tools run against swtpm_py too, and the commands it lacks (PolicySigned, PolicyTicket,
PolicyAuthorize, PolicyNV, PolicyAuthorizeNV, PolicyNvWritten, PolicyCounterTimer,
PolicyDuplicationSelect, PolicySecret of another entity) are added. PolicyTicket cannot run in a
trial session (Part 3 §23.5: TPM_RC_ATTRIBUTES), so its digest comes from policy sessions, with
a ticket from PolicySecret(expiration < 0) issued by the same TPM. PolicyPhysicalPresence has
no tpm2-tools command (tpm2-tools 5.4): pytss and the formula only.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CC, TPM2_EO, TPM2_RH, TPM2_SE, TPM2_ST
from tpm2_pytss.types import (TPM2B_DIGEST, TPM2B_NONCE, TPM2B_OPERAND, TPML_DIGEST,
                              TPML_PCR_SELECTION, TPMT_SIGNATURE, TPMT_SYM_DEF, TPMT_TK_VERIFIED)

from emulator import Emulator
from nvcmd import AUTH_RW, OWNER_RW, define_space, nv_public, write
from objcmd import rc
from sessclient import b2, u16, u32
from test_policy import flush_everything
from test_signing import loaded, rsa_public, rsa_signature

from swtpm_py.tpm.constants import ALG, NvAttr

TOOLS_TIMEOUT = 60
#: Command codes the digests are extended with (Part 2 §6.5.2).
CC_POLICY_NV, CC_POLICY_SECRET, CC_POLICY_SIGNED = 0x149, 0x151, 0x160
CC_POLICY_AUTHORIZE, CC_POLICY_AUTH_VALUE = 0x16A, 0x16B
CC_POLICY_COMMAND_CODE, CC_POLICY_COUNTER_TIMER = 0x16C, 0x16D
CC_POLICY_CP_HASH, CC_POLICY_LOCALITY, CC_POLICY_NAME_HASH, CC_POLICY_OR = 0x16E, 0x16F, 0x170, 0x171
CC_POLICY_PCR, CC_POLICY_PHYSICAL_PRESENCE = 0x17F, 0x187
CC_POLICY_DUPLICATION_SELECT, CC_POLICY_NV_WRITTEN = 0x188, 0x18F
CC_POLICY_TEMPLATE, CC_POLICY_AUTHORIZE_NV = 0x190, 0x192
CC_UNSEAL, CC_NV_READ = 0x15E, 0x14E
OWNER, ENDORSEMENT = 0x40000001, 0x4000000B
#: The NV indices (owner range) this module defines on both emulators.
NV_DATA, NV_APPROVED = 0x01500A01, 0x01500A02
NV_DATA_VALUE = bytes(range(0x10, 0x18))
RSA_KEY = rsa.generate_private_key(65537, 2048)
REF = b"policy ref"
OPERAND = b"\x12\x13"


HASHLIB = {TPM2_ALG.SHA1: "sha1", TPM2_ALG.SHA256: "sha256", TPM2_ALG.SHA384: "sha384"}


def h(*parts: bytes) -> bytes:
    """SHA-256 of the concatenation (the nameAlg of every Name here)."""
    return hashlib.sha256(b"".join(parts)).digest()


@dataclass(frozen=True)
class Formulas:
    """The digest formulas for a policy session whose authHash is ``alg``."""

    alg: TPM2_ALG

    def h(self, *parts: bytes) -> bytes:
        """H_alg of the concatenation."""
        return hashlib.new(HASHLIB[self.alg], b"".join(parts)).digest()

    @property
    def zero(self) -> bytes:
        """The digest of a new session: zeros of the digest size (Part 1 §19.7.2)."""
        return bytes(len(self.h()))

    def update(self, digest: bytes, code: int, *parts: bytes) -> bytes:
        """policyDigest_new := H(policyDigest_old || code || parts) (Part 1 §19.7.2)."""
        return self.h(digest, u32(code), *parts)

    def policy_update(self, code: int, name: bytes, ref: bytes) -> bytes:
        """PolicyUpdate() of Part 3 §23.2.2 (PolicySigned, PolicySecret, PolicyTicket,
        PolicyAuthorize) from a new session: H(H(0 || code || name) || policyRef)."""
        return self.h(self.update(self.zero, code, name), ref)

    def first(self, code: int, *parts: bytes) -> bytes:
        """One update of a new session's digest."""
        return self.update(self.zero, code, *parts)

    def operand_args(self, operand: bytes, offset: int, operation: int) -> bytes:
        """args of PolicyNV / PolicyCounterTimer: H(operandB || offset || operation)."""
        return self.h(operand, u16(offset), u16(operation))

    @property
    def approved(self) -> bytes:
        """A policy to approve or OR: PolicyCommandCode(Unseal)."""
        return self.first(CC_POLICY_COMMAND_CODE, u32(CC_UNSEAL))

    @property
    def other(self) -> bytes:
        """Another branch: PolicyAuthValue."""
        return self.first(CC_POLICY_AUTH_VALUE)

    @property
    def a_digest(self) -> bytes:
        """A digest of the session's size for PolicyCpHash, PolicyNameHash, PolicyTemplate."""
        return self.h(b"a hash")


SHA256_FORMULAS = Formulas(TPM2_ALG.SHA256)
#: The policy the NV index of PolicyAuthorizeNV approves.
APPROVED = SHA256_FORMULAS.approved
#: A signer's Name for PolicyAuthorize (in a trial session only its form is checked).
AUTHORITY_NAME = u16(ALG.SHA256) + h(b"the authority's public area")
OBJECT_NAME = u16(ALG.SHA256) + h(b"object")
PARENT_NAME = u16(ALG.SHA256) + h(b"new parent")


def nv_name(index: int, attributes: int, size: int) -> bytes:
    """The Name of an NV index: nameAlg || H(TPMS_NV_PUBLIC) (Part 1 §16)."""
    return u16(ALG.SHA256) + h(nv_public(index, attributes, size)[2:])


#: The data index is also authorized by its (empty) authValue, for PolicySecret (an index offers
#: its authValue only with TPMA_NV_AUTHREAD or TPMA_NV_AUTHWRITE). Both indices are written
#: once, so TPMA_NV_WRITTEN is part of the Name.
DATA_ATTRIBUTES = OWNER_RW | AUTH_RW
DATA_NAME = nv_name(NV_DATA, DATA_ATTRIBUTES | NvAttr.WRITTEN, len(NV_DATA_VALUE))
APPROVED_NAME = nv_name(NV_APPROVED, OWNER_RW | NvAttr.WRITTEN, 34)
KEY_PUBLIC = rsa_public(RSA_KEY)
KEY_NAME = u16(ALG.SHA256) + h(KEY_PUBLIC)


def selection_bytes(pcrs: list[int]) -> bytes:
    """TPML_PCR_SELECTION of the SHA-256 bank."""
    bits = bytearray(3)
    for p in pcrs:
        bits[p // 8] |= 1 << (p % 8)
    return u32(1) + u16(ALG.SHA256) + b"\x03" + bytes(bits)


# ---------------------------------------------------------------------------- one emulator


@dataclass
class Target:
    """One emulator with the objects the cases need, and a directory for the tools' files."""

    emu: Emulator
    workdir: Path
    key: int = 0

    def tool(self, *args: str) -> None:
        """Run a tpm2-tools binary against this emulator; it must succeed."""
        proc = subprocess.run([args[0], "-T", self.emu.tcti, *args[1:]], cwd=self.workdir,
                              capture_output=True, timeout=TOOLS_TIMEOUT)
        assert proc.returncode == 0, (self.emu.kind, args, proc.stderr.decode(errors="replace"))

    def write_files(self, p: Formulas) -> None:
        """The input files of the tools, for sessions of ``p.alg``."""
        files = {"ref.bin": REF, "operand.bin": OPERAND, "approved.bin": p.approved,
                 "authority.name": AUTHORITY_NAME, "object.name": OBJECT_NAME,
                 "parent.name": PARENT_NAME, "owner.name": u32(OWNER), "a.dat": p.approved,
                 "b.dat": p.other, "digest.bin": p.a_digest, "cphash.bin": b2(p.a_digest),
                 "signature.bin": rsa_signature(ALG.RSASSA, ALG.SHA256, RSA_KEY.sign(
                     a_hash(), padding.PKCS1v15(), Prehashed(hashes.SHA256())))}
        for filename, content in files.items():
            (self.workdir / filename).write_bytes(content)

    def tools_digest(self, steps: list[list[str]], policy_session: bool = False,
                     alg: TPM2_ALG = TPM2_ALG.SHA256) -> bytes:
        """Start a trial (or policy) session of ``alg`` with tpm2_startauthsession, run
        ``steps`` (each given ``-S`` and ``-L``), flush; the digest the last step wrote."""
        out = self.workdir / "policy.dat"
        out.unlink(missing_ok=True)
        kind = ["--policy-session"] if policy_session else []
        self.tool("tpm2_startauthsession", "-S", "s.ctx", "-g", HASHLIB[alg], *kind)
        try:
            for step in steps:
                self.tool(step[0], "-S", "s.ctx", "-L", str(out), *step[1:])
        finally:
            self.tool("tpm2_flushcontext", "s.ctx")
        return out.read_bytes()


def setup_target(emu: Emulator, workdir: Path) -> Target:
    """Load the external signing key, define and write the NV indices, write the files."""
    send = emu.command
    flush_everything(send)
    target = Target(emu, workdir)
    target.key, name = loaded(send, KEY_PUBLIC, hierarchy=0x40000007)
    assert name == KEY_NAME, emu.kind
    for index, attributes, value in ((NV_DATA, DATA_ATTRIBUTES, NV_DATA_VALUE),
                                     (NV_APPROVED, OWNER_RW, u16(ALG.SHA256) + APPROVED)):
        assert rc(send(define_space(index, attributes, len(value)))) == 0, emu.kind
        assert rc(send(write(index, value))) == 0, emu.kind
    target.write_files(SHA256_FORMULAS)
    return target


def a_hash() -> bytes:
    """aHash of PolicySigned with an empty nonceTPM and cpHashA, expiration 0 and REF (Part 3
    §23.3.1): what the signature in the PolicySigned case signs."""
    return h(struct.pack(">i", 0), REF)


@pytest.fixture(scope="module")
def targets(pair: dict[str, Emulator], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, Target]]:
    """Both emulators set up alike."""
    result = {kind: setup_target(emu, tmp_path_factory.mktemp(f"digests-{kind}"))
              for kind, emu in pair.items()}
    yield result
    for target in result.values():
        flush_everything(target.emu.command)


@pytest.fixture
def esys(targets: dict[str, Target]) -> Iterator[dict[str, ESAPI]]:
    """An ESAPI context to each emulator."""
    ctxs = {kind: ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={t.emu.port}"))
            for kind, t in targets.items()}
    yield ctxs
    for ctx in ctxs.values():
        ctx.close()


NULL_SYM = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)


def pytss_digest(ctx: ESAPI, steps: Callable[[ESAPI, ESYS_TR], object],
                 session_type: TPM2_SE = TPM2_SE.TRIAL,
                 alg: TPM2_ALG = TPM2_ALG.SHA256) -> bytes:
    """Run ``steps`` in a new trial (or policy) session of ``alg``; its PolicyGetDigest."""
    s = ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, session_type, NULL_SYM, alg)
    try:
        steps(ctx, s)
        return bytes(ctx.policy_get_digest(s))
    finally:
        ctx.flush_context(s)


# ---------------------------------------------------------------------------- the cases


def nv(ctx: ESAPI, index: int) -> ESYS_TR:
    """The ESYS_TR of an NV index (ESAPI reads its public area)."""
    return ctx.tr_from_tpmpublic(index)


def key(ctx: ESAPI) -> ESYS_TR:
    """The ESYS_TR of the loaded external key (the first transient object)."""
    return ctx.tr_from_tpmpublic(0x80000000)


def signature() -> TPMT_SIGNATURE:
    """The PolicySigned signature as the TPMT_SIGNATURE pytss sends."""
    sig, _ = TPMT_SIGNATURE.unmarshal(rsa_signature(ALG.RSASSA, ALG.SHA256, RSA_KEY.sign(
        a_hash(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))))
    return sig


def null_verified() -> TPMT_TK_VERIFIED:
    """A NULL verification ticket (a trial session does not check it, Part 3 §23.16)."""
    return TPMT_TK_VERIFIED(tag=TPM2_ST.VERIFIED, hierarchy=TPM2_RH.NULL)


PytssSteps = Callable[[ESAPI, ESYS_TR, Formulas], object]
#: name: (tpm2-tools steps, pytss steps, digest by formula). A step's first element is the
#: tool; ``-S`` and ``-L`` are added. Every digest argument has the session's size.
CASES: dict[str, tuple[list[list[str]] | None, PytssSteps, Callable[[Formulas], bytes]]] = {
    "PolicySigned": (
        [["tpm2_policysigned", "-c", "0x80000000", "-s", "signature.bin", "-q", "ref.bin"]],
        lambda ctx, s, p: ctx.policy_signed(key(ctx), s, signature(), policy_ref=REF,
                                            expiration=0),
        lambda p: p.policy_update(CC_POLICY_SIGNED, KEY_NAME, REF)),
    "PolicySecret(endorsement)": (
        [["tpm2_policysecret", "-c", "e", "-q", "ref.bin"]],
        lambda ctx, s, p: ctx.policy_secret(ESYS_TR.ENDORSEMENT, s, TPM2B_NONCE(),
                                            TPM2B_DIGEST(), TPM2B_NONCE(REF), 0),
        lambda p: p.policy_update(CC_POLICY_SECRET, u32(ENDORSEMENT), REF)),
    "PolicySecret(NV index)": (
        [["tpm2_policysecret", "-c", hex(NV_DATA)]],
        lambda ctx, s, p: ctx.policy_secret(nv(ctx, NV_DATA), s, TPM2B_NONCE(), TPM2B_DIGEST(),
                                            TPM2B_NONCE(), 0),
        lambda p: p.policy_update(CC_POLICY_SECRET, DATA_NAME, b"")),
    "PolicyAuthorize": (
        [["tpm2_policyauthorize", "-i", "approved.bin", "-q", "ref.bin", "-n",
          "authority.name"]],
        lambda ctx, s, p: ctx.policy_authorize(s, p.approved, AUTHORITY_NAME, null_verified(),
                                               REF),
        lambda p: p.policy_update(CC_POLICY_AUTHORIZE, AUTHORITY_NAME, REF)),
    "PolicyNV(eq, offset 2)": (
        [["tpm2_policynv", "-C", "o", "-i", "operand.bin", "--offset", "2", hex(NV_DATA),
          "eq"]],
        lambda ctx, s, p: ctx.policy_nv(ESYS_TR.OWNER, nv(ctx, NV_DATA), s,
                                        TPM2B_OPERAND(OPERAND), TPM2_EO.EQ, 2),
        lambda p: p.first(CC_POLICY_NV, p.operand_args(OPERAND, 2, 0), DATA_NAME)),
    "PolicyNV(ule)": (
        [["tpm2_policynv", "-C", "o", "-i", "operand.bin", hex(NV_DATA), "ule"]],
        lambda ctx, s, p: ctx.policy_nv(ESYS_TR.OWNER, nv(ctx, NV_DATA), s,
                                        TPM2B_OPERAND(OPERAND), TPM2_EO.UNSIGNED_LE, 0),
        lambda p: p.first(CC_POLICY_NV, p.operand_args(OPERAND, 0, 9), DATA_NAME)),
    "PolicyAuthorizeNV": (
        [["tpm2_policyauthorizenv", "-C", "o", hex(NV_APPROVED)]],
        lambda ctx, s, p: ctx.policy_authorize_nv(nv(ctx, NV_APPROVED), s, ESYS_TR.OWNER),
        lambda p: p.first(CC_POLICY_AUTHORIZE_NV, APPROVED_NAME)),
    "PolicyNvWritten(set)": (
        [["tpm2_policynvwritten", "s"]],
        lambda ctx, s, p: ctx.policy_nv_written(s, True),
        lambda p: p.first(CC_POLICY_NV_WRITTEN, b"\x01")),
    "PolicyNvWritten(clear)": (
        [["tpm2_policynvwritten", "c"]],
        lambda ctx, s, p: ctx.policy_nv_written(s, False),
        lambda p: p.first(CC_POLICY_NV_WRITTEN, b"\x00")),
    "PolicyCounterTimer(clock > 5000)": (
        [["tpm2_policycountertimer", "--ugt", "clock=5000"]],
        lambda ctx, s, p: ctx.policy_counter_timer(
            s, TPM2B_OPERAND((5000).to_bytes(8, "big")), TPM2_EO.UNSIGNED_GT, 8),
        lambda p: p.first(CC_POLICY_COUNTER_TIMER,
                          p.operand_args((5000).to_bytes(8, "big"), 8, 3))),
    "PolicyCounterTimer(resets == 1)": (
        [["tpm2_policycountertimer", "resets=1"]],
        lambda ctx, s, p: ctx.policy_counter_timer(s, TPM2B_OPERAND(u32(1)), TPM2_EO.EQ, 16),
        lambda p: p.first(CC_POLICY_COUNTER_TIMER, p.operand_args(u32(1), 16, 0))),
    "PolicyDuplicationSelect(include)": (
        [["tpm2_policyduplicationselect", "-n", "object.name", "-N", "parent.name",
          "--include-object"]],
        lambda ctx, s, p: ctx.policy_duplication_select(s, OBJECT_NAME, PARENT_NAME, True),
        lambda p: p.first(CC_POLICY_DUPLICATION_SELECT, OBJECT_NAME, PARENT_NAME, b"\x01")),
    "PolicyDuplicationSelect": (
        [["tpm2_policyduplicationselect", "-n", "object.name", "-N", "parent.name"]],
        lambda ctx, s, p: ctx.policy_duplication_select(s, OBJECT_NAME, PARENT_NAME, False),
        lambda p: p.first(CC_POLICY_DUPLICATION_SELECT, PARENT_NAME, b"\x00")),
    "PolicyTemplate": (
        [["tpm2_policytemplate", "--template-hash", "digest.bin"]],
        lambda ctx, s, p: ctx.policy_template(s, TPM2B_DIGEST(p.a_digest)),
        lambda p: p.first(CC_POLICY_TEMPLATE, p.a_digest)),
    "PolicyCpHash": (
        [["tpm2_policycphash", "--cphash-input", "cphash.bin"]],
        lambda ctx, s, p: ctx.policy_cp_hash(s, TPM2B_DIGEST(p.a_digest)),
        lambda p: p.first(CC_POLICY_CP_HASH, p.a_digest)),
    "PolicyNameHash": (
        [["tpm2_policynamehash", "-n", "digest.bin"]],
        lambda ctx, s, p: ctx.policy_name_hash(s, TPM2B_DIGEST(p.a_digest)),
        lambda p: p.first(CC_POLICY_NAME_HASH, p.a_digest)),
    "PolicyLocality(one, two)": (
        [["tpm2_policylocality", "6"]],
        lambda ctx, s, p: ctx.policy_locality(s, 6),
        lambda p: p.first(CC_POLICY_LOCALITY, b"\x06")),
    "PolicyCommandCode(NV_Read)": (
        [["tpm2_policycommandcode", "TPM2_CC_NV_Read"]],
        lambda ctx, s, p: ctx.policy_command_code(s, TPM2_CC.NV_Read),
        lambda p: p.first(CC_POLICY_COMMAND_CODE, u32(CC_NV_READ))),
    "PolicyOR": (
        [["tpm2_policyor", "-l", "{alg}:a.dat,b.dat"]],
        lambda ctx, s, p: ctx.policy_or(s, TPML_DIGEST([p.approved, p.other])),
        lambda p: p.first(CC_POLICY_OR, p.approved, p.other)),
    "PolicyAuthValue": (
        [["tpm2_policyauthvalue"]],
        lambda ctx, s, p: ctx.policy_auth_value(s),
        lambda p: p.first(CC_POLICY_AUTH_VALUE)),
    "PolicyPassword": (
        [["tpm2_policypassword"]],
        lambda ctx, s, p: ctx.policy_password(s),
        lambda p: p.first(CC_POLICY_AUTH_VALUE)),
    "PolicyPhysicalPresence": (
        None,
        lambda ctx, s, p: ctx.policy_physical_presence(s),
        lambda p: p.first(CC_POLICY_PHYSICAL_PRESENCE)),
    "PolicySigned + PolicyNV + PolicyAuthorizeNV": (
        [["tpm2_policysigned", "-c", "0x80000000", "-s", "signature.bin", "-q", "ref.bin"],
         ["tpm2_policynv", "-C", "o", "-i", "operand.bin", hex(NV_DATA), "neq"],
         ["tpm2_policyauthorizenv", "-C", "o", hex(NV_APPROVED)]],
        lambda ctx, s, p: (ctx.policy_signed(key(ctx), s, signature(), policy_ref=REF,
                                             expiration=0),
                           ctx.policy_nv(ESYS_TR.OWNER, nv(ctx, NV_DATA), s,
                                         TPM2B_OPERAND(OPERAND), TPM2_EO.NEQ, 0),
                           ctx.policy_authorize_nv(nv(ctx, NV_APPROVED), s, ESYS_TR.OWNER)),
        lambda p: p.first(CC_POLICY_AUTHORIZE_NV, APPROVED_NAME)),
}


@pytest.mark.parametrize("alg", [TPM2_ALG.SHA256, TPM2_ALG.SHA1, TPM2_ALG.SHA384],
                         ids=lambda alg: HASHLIB[alg])
@pytest.mark.parametrize("name", list(CASES))
def test_trial_digest_four_ways(targets: dict[str, Target], esys: dict[str, ESAPI],
                                name: str, alg: TPM2_ALG) -> None:
    """tpm2-tools and tpm2-pytss trial sessions of ``alg`` on swtpm_py and on swtpm, and the
    formula: the same digest."""
    tools_steps, pytss_steps, formula = CASES[name]
    p = Formulas(alg)
    expected = formula(p)
    assert len(expected) == len(p.zero)
    got = {}
    for kind, target in targets.items():
        if tools_steps is not None:
            target.write_files(p)
            steps = [[arg.format(alg=HASHLIB[alg]) for arg in step] for step in tools_steps]
            got["tools", kind] = target.tools_digest(steps, alg=alg)
        got["pytss", kind] = pytss_digest(esys[kind], lambda ctx, s: pytss_steps(ctx, s, p),
                                          alg=alg)
    assert got == {k: expected for k in got}, name


def test_policy_pcr_digest_four_ways(targets: dict[str, Target], esys: dict[str, ESAPI]) -> None:
    """PolicyPCR with an empty pcrDigest: the TPM digests the current values of the selected
    PCRs; after an extend of PCR 16 on both emulators (so the values are not all initial),
    tools, pytss and the formula over the values read back agree."""
    got, expected = {}, {}
    for kind, target in targets.items():
        ctx = esys[kind]
        ctx.pcr_event(ESYS_TR.PCR16, b"policy digests")
        values = ctx.pcr_read(TPML_PCR_SELECTION.parse("sha256:0,16"))[2]
        pcr_digest = h(*(bytes(v) for v in values))
        expected[kind] = SHA256_FORMULAS.first(CC_POLICY_PCR, selection_bytes([0, 16]),
                                               pcr_digest)
        got["tools", kind] = target.tools_digest([["tpm2_policypcr", "-l", "sha256:0,16"]])
        got["pytss", kind] = pytss_digest(ctx, lambda c, s: c.policy_pcr(
            s, TPM2B_DIGEST(), TPML_PCR_SELECTION.parse("sha256:0,16")))
    assert expected["swtpm_py"] == expected["swtpm"]
    assert got == {k: expected["swtpm"] for k in got}


def test_policy_ticket_digest(targets: dict[str, Target], esys: dict[str, ESAPI]) -> None:
    """PolicyTicket (policy sessions only): a ticket from PolicySecret(owner, expiration -100,
    REF) issued by the same TPM — by tpm2_policysecret for tpm2_policyticket, by pytss for
    pytss — gives the digest PolicySecret would: H(H(0 || CC_PolicySecret || owner) || REF)."""
    expected = SHA256_FORMULAS.policy_update(CC_POLICY_SECRET, u32(OWNER), REF)
    got = {}
    for kind, target in targets.items():
        # A ticket from tpm2-tools.
        target.tools_digest([["tpm2_policysecret", "-c", "o", "-t", "-100", "-q", "ref.bin",
                              "--ticket", "ticket.bin", "--timeout", "timeout.bin"]],
                            policy_session=True)
        got["tools", kind] = target.tools_digest(
            [["tpm2_policyticket", "-n", "owner.name", "-q", "ref.bin", "--ticket",
              "ticket.bin", "--timeout", "timeout.bin"]], policy_session=True)
        ctx = esys[kind]
        issued = {}

        def secret(c: ESAPI, s: ESYS_TR) -> None:
            issued["timeout"], issued["ticket"] = c.policy_secret(
                ESYS_TR.OWNER, s, TPM2B_NONCE(), TPM2B_DIGEST(), TPM2B_NONCE(REF), -100)

        assert pytss_digest(ctx, secret, TPM2_SE.POLICY) == expected, kind
        got["pytss", kind] = pytss_digest(ctx, lambda c, s: c.policy_ticket(
            s, issued["timeout"], u32(OWNER), issued["ticket"], policy_ref=REF),
            TPM2_SE.POLICY)
    assert got == {k: expected for k in got}
