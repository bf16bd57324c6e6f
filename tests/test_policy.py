"""Policy sessions (Part 1 §19.7, Part 3 §23).

* Digests: each policy is built three ways and must give the same octets — tpm2-tools' trial
  sessions against the real swtpm (``tpm2_startauthsession`` + ``tpm2_policy*``), a tpm2-pytss
  trial session against swtpm_py, and the update formulas computed here with hashlib.
* Use: an object whose authPolicy is a policy digest is used through policy sessions on both
  emulators in the same test — the same successes and the same response codes (policy
  mismatch, wrong command, changed PCRs, locality, wrong authValue or password).
* Errors of the policy commands themselves, as raw commands, against both emulators.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CC, TPM2_SE, TPMA_OBJECT
from tpm2_pytss.types import (TPM2B_AUTH, TPM2B_DIGEST, TPM2B_NONCE, TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE,
                              TPM2B_SENSITIVE_DATA, TPML_DIGEST, TPML_DIGEST_VALUES,
                              TPML_PCR_SELECTION, TPMS_SENSITIVE_CREATE, TPMT_HA, TPMT_SYM_DEF,
                              TPMU_HA)

from emulator import Emulator
from sessclient import Use, b2, call, rc_of, start_session, u16, u32
from tpmcmd import cmd, pcr_read, pcr_values

CC_POLICY_AUTH_VALUE = 0x16B
CC_POLICY_COMMAND_CODE = 0x16C
CC_POLICY_CP_HASH = 0x16E
CC_POLICY_LOCALITY = 0x16F
CC_POLICY_NAME_HASH = 0x170
CC_POLICY_OR = 0x171
CC_POLICY_PCR = 0x17F
CC_POLICY_RESTART = 0x180
CC_POLICY_PHYSICAL_PRESENCE = 0x187
CC_POLICY_GET_DIGEST = 0x189
CC_POLICY_PASSWORD = 0x18C
CC_POLICY_TEMPLATE = 0x190
CC_POLICY_SECRET = 0x151
CC_CREATE, CC_LOAD, CC_PCR_EVENT = 0x153, 0x157, 0x13C
HASHLIB = {TPM2_ALG.SHA1: "sha1", TPM2_ALG.SHA256: "sha256", TPM2_ALG.SHA384: "sha384",
           TPM2_ALG.SHA512: "sha512"}
TOOL_HASH = {TPM2_ALG.SHA1: "sha1", TPM2_ALG.SHA256: "sha256", TPM2_ALG.SHA384: "sha384"}
#: Codes measured on swtpm 0.7.1.
POLICY_FAIL_S1 = 0x99D
POLICY_CC_S1 = 0x9A4
BAD_AUTH_S1 = 0x9A2
PCR_CHANGED = 0x128
LOCALITY = 0x907
VALUE_P1, SIZE_P1, RANGE_P1, POLICY_CC_P1 = 0x1C4, 0x1D5, 0x1CD, 0x1E4
VALUE_H1, HANDLE_H1, REFERENCE_H0 = 0x184, 0x18B, 0x910
CPHASH = 0x151


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def esys(pair: dict[str, Emulator]) -> Iterator[dict[str, ESAPI]]:
    """An ESAPI context to each emulator of the pair; sessions and objects flushed after."""
    ctxs = {kind: ESAPI(TCTILdr("swtpm", f"host=127.0.0.1,port={emu.port}"))
            for kind, emu in pair.items()}
    yield ctxs
    for kind, ctx in ctxs.items():
        ctx.close()
        flush_everything(pair[kind].command)


def flush_everything(send: Callable[[bytes], bytes]) -> None:
    """Flush every loaded session and transient object."""
    for first in (0x02000000, 0x80000000):
        resp = send(cmd(0x17A, u32(1) + u32(first) + u32(64)))
        count = struct.unpack_from(">I", resp, 15)[0]
        for handle in struct.unpack_from(f">{count}I", resp, 19):
            send(cmd(0x165, u32(handle)))


NULL_SYM = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)


def trial(ctx: ESAPI, alg: TPM2_ALG = TPM2_ALG.SHA256) -> ESYS_TR:
    return ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, NULL_SYM, alg)


def policy_session(ctx: ESAPI, alg: TPM2_ALG = TPM2_ALG.SHA256) -> ESYS_TR:
    return ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, NULL_SYM, alg)


def update(alg: TPM2_ALG, digest: bytes, code: int, *parts: bytes) -> bytes:
    """policyDigest_new = H(policyDigest_old || code || parts) (Part 1 §19.7.2)."""
    return hashlib.new(HASHLIB[alg], digest + u32(code) + b"".join(parts)).digest()


def zeros(alg: TPM2_ALG) -> bytes:
    return bytes(hashlib.new(HASHLIB[alg]).digest_size)


# ---------------------------------------------------------------------------- digests


def run_tools(emu: Emulator, workdir: Path, steps: list[list[str]], alg: TPM2_ALG) -> bytes:
    """A trial session of tpm2-tools against ``emu``: start, the ``steps`` (each given
    ``-L policy.dat``, except tpm2_policyrestart, which writes no policy), flush; the policy
    digest the last step wrote."""
    def tool(*args: str) -> None:
        proc = subprocess.run([args[0], "-T", emu.tcti, *args[1:]], cwd=workdir,
                              capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")

    policy = workdir / "policy.dat"
    policy.unlink(missing_ok=True)
    tool("tpm2_startauthsession", "-S", "s.ctx", "-g", TOOL_HASH[alg])
    try:
        for step in steps:
            output = [] if step[0] == "tpm2_policyrestart" else ["-L", str(policy)]
            tool(step[0], "-S", "s.ctx", *step[1:], *output)
    finally:
        tool("tpm2_flushcontext", "s.ctx")
    return policy.read_bytes()


def pcr_digest(send: Callable[[bytes], bytes], alg: TPM2_ALG, bank: TPM2_ALG,
               pcrs: list[int]) -> bytes:
    """H_alg of the PCR values (ascending) of one bank, read from the TPM."""
    values = b"".join(pcr_values(send(pcr_read(bank, [p])))[0] for p in sorted(pcrs))
    return hashlib.new(HASHLIB[alg], values).digest()


def selection_bytes(bank: TPM2_ALG, pcrs: list[int]) -> bytes:
    """A marshalled TPML_PCR_SELECTION of one bank."""
    bits = bytearray(3)
    for p in pcrs:
        bits[p // 8] |= 1 << (p % 8)
    return u32(1) + u16(bank) + b"\x03" + bytes(bits)


def cases(alg: TPM2_ALG) -> list[tuple]:
    """Each case: name, tpm2-tools steps, the same through tpm2-pytss, and the digest by
    formula (given the TPM, for PCR values). ``H`` is a digest of the session's size, which the
    tools read from cphash.bin (as a TPM2B) and namehash.bin."""
    H = hashlib.new(HASHLIB[alg], b"a hash").digest()
    return [
        ("PolicyAuthValue", [["tpm2_policyauthvalue"]],
         lambda ctx, s: ctx.policy_auth_value(s),
         lambda alg, send: update(alg, zeros(alg), CC_POLICY_AUTH_VALUE)),
        ("PolicyPassword (digest of PolicyAuthValue)", [["tpm2_policypassword"]],
         lambda ctx, s: ctx.policy_password(s),
         lambda alg, send: update(alg, zeros(alg), CC_POLICY_AUTH_VALUE)),
        ("PolicyCommandCode(PCR_Event)", [["tpm2_policycommandcode", "TPM2_CC_PCR_Event"]],
         lambda ctx, s: ctx.policy_command_code(s, TPM2_CC.PCR_Event),
         lambda alg, send: update(alg, zeros(alg), CC_POLICY_COMMAND_CODE, u32(CC_PCR_EVENT))),
        ("PolicyLocality(three)", [["tpm2_policylocality", "three"]],
         lambda ctx, s: ctx.policy_locality(s, 8),
         lambda alg, send: update(alg, zeros(alg), CC_POLICY_LOCALITY, b"\x08")),
        ("PolicyPCR sha256:0,1,16", [["tpm2_policypcr", "-l", "sha256:0,1,16"]],
         lambda ctx, s: ctx.policy_pcr(s, TPM2B_DIGEST(), TPML_PCR_SELECTION.parse("sha256:0,1,16")),
         lambda alg, send: update(alg, zeros(alg), CC_POLICY_PCR,
                                  selection_bytes(TPM2_ALG.SHA256, [0, 1, 16]),
                                  pcr_digest(send, alg, TPM2_ALG.SHA256, [0, 1, 16]))),
        ("PolicyPCR sha1:7", [["tpm2_policypcr", "-l", "sha1:7"]],
         lambda ctx, s: ctx.policy_pcr(s, TPM2B_DIGEST(), TPML_PCR_SELECTION.parse("sha1:7")),
         lambda alg, send: update(alg, zeros(alg), CC_POLICY_PCR,
                                  selection_bytes(TPM2_ALG.SHA1, [7]),
                                  pcr_digest(send, alg, TPM2_ALG.SHA1, [7]))),
        ("PolicyCpHash", [["tpm2_policycphash", "--cphash-input", "cphash.bin"]],
         lambda ctx, s: ctx.policy_cp_hash(s, TPM2B_DIGEST(H)),
         lambda alg, send: update(alg, zeros(alg), CC_POLICY_CP_HASH, H)),
        ("PolicyNameHash", [["tpm2_policynamehash", "-n", "namehash.bin"]],
         lambda ctx, s: ctx.policy_name_hash(s, TPM2B_DIGEST(H)),
         lambda alg, send: update(alg, zeros(alg), CC_POLICY_NAME_HASH, H)),
        ("PolicyTemplate", [["tpm2_policytemplate", "--template-hash", "namehash.bin"]],
         lambda ctx, s: ctx.policy_template(s, TPM2B_DIGEST(H)),
         lambda alg, send: update(alg, zeros(alg), CC_POLICY_TEMPLATE, H)),
        ("PolicyCommandCode + PolicyPCR + PolicyAuthValue",
         [["tpm2_policycommandcode", "TPM2_CC_Create"], ["tpm2_policypcr", "-l", "sha256:16"],
          ["tpm2_policyauthvalue"]],
         lambda ctx, s: (ctx.policy_command_code(s, TPM2_CC.Create),
                         ctx.policy_pcr(s, TPM2B_DIGEST(), TPML_PCR_SELECTION.parse("sha256:16")),
                         ctx.policy_auth_value(s)),
         lambda alg, send: update(alg, update(alg, update(
             alg, zeros(alg), CC_POLICY_COMMAND_CODE, u32(CC_CREATE)), CC_POLICY_PCR,
             selection_bytes(TPM2_ALG.SHA256, [16]),
             pcr_digest(send, alg, TPM2_ALG.SHA256, [16])), CC_POLICY_AUTH_VALUE)),
        ("PolicySecret(owner, policyRef)", [["tpm2_policysecret", "-c", "o", "-q", "ref.bin"]],
         lambda ctx, s: ctx.policy_secret(ESYS_TR.OWNER, s, TPM2B_NONCE(), TPM2B_DIGEST(),
                                          TPM2B_NONCE(b"policy ref"), 0),
         lambda alg, send: hashlib.new(HASHLIB[alg], update(
             alg, zeros(alg), CC_POLICY_SECRET, u32(0x40000001)) + b"policy ref").digest()),
        ("PolicyRestart forgets", [["tpm2_policyauthvalue"], ["tpm2_policyrestart"],
                                   ["tpm2_policypassword"]],
         lambda ctx, s: (ctx.policy_auth_value(s), ctx.policy_restart(s),
                         ctx.policy_password(s)),
         lambda alg, send: update(alg, zeros(alg), CC_POLICY_AUTH_VALUE)),
    ]


@pytest.mark.parametrize("alg", [TPM2_ALG.SHA256, TPM2_ALG.SHA1, TPM2_ALG.SHA384])
def test_trial_digests_equal_tpm2_tools_on_swtpm(pair: dict[str, Emulator],
                                                 esys: dict[str, ESAPI], tmp_path: Path,
                                                 alg: TPM2_ALG) -> None:
    """For every policy command: tpm2-tools' trial session on the real swtpm, tpm2-pytss' on
    swtpm_py and the formula give the same digest."""
    h = hashlib.new(HASHLIB[alg], b"a hash").digest()
    (tmp_path / "cphash.bin").write_bytes(b2(h))
    (tmp_path / "namehash.bin").write_bytes(h)
    (tmp_path / "ref.bin").write_bytes(b"policy ref")
    ours = esys["swtpm_py"]
    for name, steps, pytss_steps, formula in cases(alg):
        expected = formula(alg, pair["swtpm_py"].command)
        assert formula(alg, pair["swtpm"].command) == expected, name
        tools = run_tools(pair["swtpm"], tmp_path, steps, alg)
        s = trial(ours, alg)
        pytss_steps(ours, s)
        got = bytes(ours.policy_get_digest(s))
        ours.flush_context(s)
        assert (tools, got) == (expected, expected), name


def test_policy_or_and_physical_presence_digests(pair: dict[str, Emulator],
                                                 esys: dict[str, ESAPI],
                                                 tmp_path: Path) -> None:
    """PolicyOR: tpm2_policyor on swtpm, tpm2-pytss on both, and H(0 || CC || d1 || d2);
    PolicyPhysicalPresence (no tpm2-tools command): tpm2-pytss on both and the formula."""
    a = update(TPM2_ALG.SHA256, zeros(TPM2_ALG.SHA256), CC_POLICY_AUTH_VALUE)
    b = update(TPM2_ALG.SHA256, zeros(TPM2_ALG.SHA256), CC_POLICY_COMMAND_CODE, u32(CC_CREATE))
    (tmp_path / "a.dat").write_bytes(a)
    (tmp_path / "b.dat").write_bytes(b)
    expected = update(TPM2_ALG.SHA256, zeros(TPM2_ALG.SHA256), CC_POLICY_OR, a, b)
    tools = run_tools(pair["swtpm"], tmp_path, [["tpm2_policyor", "-l", "sha256:a.dat,b.dat"]],
                      TPM2_ALG.SHA256)
    assert tools == expected
    pp = update(TPM2_ALG.SHA256, zeros(TPM2_ALG.SHA256), CC_POLICY_PHYSICAL_PRESENCE)
    for ctx in esys.values():
        s = trial(ctx)
        ctx.policy_or(s, TPML_DIGEST([a, b]))
        assert bytes(ctx.policy_get_digest(s)) == expected
        ctx.policy_restart(s)
        assert bytes(ctx.policy_get_digest(s)) == zeros(TPM2_ALG.SHA256)
        ctx.policy_physical_presence(s)
        assert bytes(ctx.policy_get_digest(s)) == pp
        ctx.flush_context(s)


# ---------------------------------------------------------------------------- use


SEALED = TPM2B_PUBLIC.parse("keyedhash", objectAttributes=TPMA_OBJECT.FIXEDTPM
                            | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.USERWITHAUTH)
SECRET = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(b"secret")))


def parent_with_policy(ctx: ESAPI, policy: bytes, auth: bytes = b"pw") -> ESYS_TR:
    """An ECC storage primary (noDA) with userAuth ``auth`` and authPolicy ``policy``."""
    attrs = (TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT | TPMA_OBJECT.FIXEDTPM
             | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.NODA)
    public = TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=attrs)
    public.publicArea.authPolicy = policy
    sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=TPM2B_AUTH(auth)))
    key = ctx.create_primary(sensitive, public)[0]
    ctx.tr_set_auth(key, auth)
    return key


def outcome(action: Callable[[], object]) -> int:
    """0 when ``action`` succeeds, else the TPM's response code."""
    try:
        action()
    except TSS2_Exception as exc:
        return exc.rc
    return 0


def on_both(esys: dict[str, ESAPI], scenario: Callable[[ESAPI], list[int]]) -> list[int]:
    """Run ``scenario`` on both emulators; they must give the same codes, which are returned."""
    got = {kind: scenario(ctx) for kind, ctx in esys.items()}
    assert got["swtpm_py"] == got["swtpm"], got
    return got["swtpm_py"]


def test_policy_auth_value_and_password(esys: dict[str, ESAPI]) -> None:
    """authPolicy = PolicyCommandCode(Create) + PolicyAuthValue: a policy session that asserts
    the same (with PolicyAuthValue, or PolicyPassword, which has the same digest) authorizes
    TPM2_Create with the right authValue; a wrong one is TPM_RC_BAD_AUTH (noDA); a session
    that skipped a step fails the policy."""
    def build(ctx: ESAPI, s: ESYS_TR, password: bool) -> None:
        ctx.policy_command_code(s, TPM2_CC.Create)
        (ctx.policy_password if password else ctx.policy_auth_value)(s)

    def scenario(ctx: ESAPI) -> list[int]:
        t = trial(ctx)
        build(ctx, t, False)
        key = parent_with_policy(ctx, bytes(ctx.policy_get_digest(t)))
        ctx.flush_context(t)
        codes = []
        for password, auth in ((False, b"pw"), (True, b"pw"), (False, b"bad"), (True, b"bad")):
            ctx.tr_set_auth(key, auth)
            s = policy_session(ctx)
            build(ctx, s, password)
            codes.append(outcome(lambda: ctx.create(key, SECRET, SEALED, session1=s)))
            ctx.flush_context(s)
        ctx.tr_set_auth(key, b"pw")
        s = policy_session(ctx)
        ctx.policy_auth_value(s)
        codes.append(outcome(lambda: ctx.create(key, SECRET, SEALED, session1=s)))
        return codes

    assert on_both(esys, scenario) == [0, 0, BAD_AUTH_S1, BAD_AUTH_S1, POLICY_FAIL_S1]


def test_policy_session_resets_after_use(esys: dict[str, ESAPI]) -> None:
    """A policy session that continues starts over after each use (its digest is zero again),
    so the same session authorizes a second command only after the policy is asserted anew."""
    def scenario(ctx: ESAPI) -> list[int]:
        t = trial(ctx)
        ctx.policy_command_code(t, TPM2_CC.Create)
        key = parent_with_policy(ctx, bytes(ctx.policy_get_digest(t)))
        ctx.flush_context(t)
        s = policy_session(ctx)
        ctx.policy_command_code(s, TPM2_CC.Create)
        codes = [outcome(lambda: ctx.create(key, SECRET, SEALED, session1=s))]
        codes.append(int(bytes(ctx.policy_get_digest(s)) == zeros(TPM2_ALG.SHA256)))
        codes.append(outcome(lambda: ctx.create(key, SECRET, SEALED, session1=s)))
        ctx.policy_command_code(s, TPM2_CC.Create)
        codes.append(outcome(lambda: ctx.create(key, SECRET, SEALED, session1=s)))
        return codes

    assert on_both(esys, scenario) == [0, 1, POLICY_FAIL_S1, 0]


def test_policy_command_code_pcr_and_locality_at_use(esys: dict[str, ESAPI]) -> None:
    """The conditions a policy records are checked at use: a policy for TPM2_Create does not
    authorize TPM2_Load (TPM_RC_POLICY_CC), PCRs extended after PolicyPCR make the session
    stale (TPM_RC_PCR_CHANGED), and PolicyLocality(three) refuses locality 0."""
    extend = TPML_DIGEST_VALUES([TPMT_HA(hashAlg=TPM2_ALG.SHA256,
                                         digest=TPMU_HA(sha256=os.urandom(32)))])

    def scenario(ctx: ESAPI) -> list[int]:
        t = trial(ctx)
        ctx.policy_command_code(t, TPM2_CC.Create)
        cc_only = bytes(ctx.policy_get_digest(t))
        ctx.policy_pcr(t, TPM2B_DIGEST(), TPML_PCR_SELECTION.parse("sha256:8"))
        with_pcr = bytes(ctx.policy_get_digest(t))
        ctx.policy_restart(t)
        ctx.policy_locality(t, 8)
        ctx.policy_command_code(t, TPM2_CC.Create)
        with_locality = bytes(ctx.policy_get_digest(t))
        ctx.flush_context(t)
        codes = []
        key = parent_with_policy(ctx, cc_only)
        s = policy_session(ctx)
        ctx.policy_command_code(s, TPM2_CC.Create)
        private, public = ctx.create(key, SECRET, SEALED, session1=s)[:2]
        ctx.policy_command_code(s, TPM2_CC.Create)
        codes.append(outcome(lambda: ctx.load(key, private, public, session1=s)))
        ctx.flush_context(s)
        ctx.flush_context(key)
        key = parent_with_policy(ctx, with_pcr)
        s = policy_session(ctx)
        ctx.policy_command_code(s, TPM2_CC.Create)
        ctx.policy_pcr(s, TPM2B_DIGEST(), TPML_PCR_SELECTION.parse("sha256:8"))
        ctx.pcr_extend(ESYS_TR.PCR8, extend)
        codes.append(outcome(lambda: ctx.create(key, SECRET, SEALED, session1=s)))
        ctx.policy_restart(s)
        ctx.policy_command_code(s, TPM2_CC.Create)
        ctx.policy_pcr(s, TPM2B_DIGEST(), TPML_PCR_SELECTION.parse("sha256:8"))
        # The digest now covers the new PCR value: not the authPolicy any more.
        codes.append(outcome(lambda: ctx.create(key, SECRET, SEALED, session1=s)))
        ctx.flush_context(s)
        ctx.flush_context(key)
        key = parent_with_policy(ctx, with_locality)
        s = policy_session(ctx)
        ctx.policy_locality(s, 8)
        ctx.policy_command_code(s, TPM2_CC.Create)
        codes.append(outcome(lambda: ctx.create(key, SECRET, SEALED, session1=s)))
        return codes

    assert on_both(esys, scenario) == [POLICY_CC_S1, PCR_CHANGED, POLICY_FAIL_S1, LOCALITY]


def test_policy_or_branches(esys: dict[str, ESAPI]) -> None:
    """authPolicy = PolicyOR(branch A, branch B): either branch, followed by PolicyOR over
    both, authorizes; a session in neither branch cannot even run PolicyOR (TPM_RC_VALUE)."""
    def scenario(ctx: ESAPI) -> list[int]:
        t = trial(ctx)
        ctx.policy_command_code(t, TPM2_CC.Create)
        a = bytes(ctx.policy_get_digest(t))
        ctx.policy_restart(t)
        ctx.policy_command_code(t, TPM2_CC.Create)
        ctx.policy_auth_value(t)
        b = bytes(ctx.policy_get_digest(t))
        ctx.policy_restart(t)
        ctx.policy_or(t, TPML_DIGEST([a, b]))
        key = parent_with_policy(ctx, bytes(ctx.policy_get_digest(t)))
        ctx.flush_context(t)
        codes = []
        for branch in ("a", "b"):
            s = policy_session(ctx)
            ctx.policy_command_code(s, TPM2_CC.Create)
            if branch == "b":
                ctx.policy_auth_value(s)
            ctx.policy_or(s, TPML_DIGEST([a, b]))
            codes.append(outcome(lambda: ctx.create(key, SECRET, SEALED, session1=s)))
            ctx.flush_context(s)
        s = policy_session(ctx)
        ctx.policy_auth_value(s)
        codes.append(outcome(lambda: ctx.policy_or(s, TPML_DIGEST([a, b]))))
        return codes

    assert on_both(esys, scenario) == [0, 0, VALUE_P1]


def test_cp_hash_and_name_hash_are_checked_at_use(esys: dict[str, ESAPI]) -> None:
    """A policy whose digest matches but whose recorded cpHash or nameHash is not the
    command's fails (TPM_RC_POLICY_FAIL). (A matching one cannot be built for an object's own
    authorization: its Name covers its authPolicy.)"""
    other = hashlib.sha256(b"another command").digest()

    def scenario(ctx: ESAPI) -> list[int]:
        codes = []
        for assert_hash in (ctx.policy_cp_hash, ctx.policy_name_hash):
            t = trial(ctx)
            assert_hash(t, TPM2B_DIGEST(other))
            key = parent_with_policy(ctx, bytes(ctx.policy_get_digest(t)))
            ctx.flush_context(t)
            s = policy_session(ctx)
            assert_hash(s, TPM2B_DIGEST(other))
            codes.append(outcome(lambda: ctx.create(key, SECRET, SEALED, session1=s)))
            ctx.flush_context(s)
            ctx.flush_context(key)
        return codes

    assert on_both(esys, scenario) == [POLICY_FAIL_S1, POLICY_FAIL_S1]


def test_policy_secret_at_use(esys: dict[str, ESAPI]) -> None:
    """authPolicy = PolicySecret(endorsement) + PolicyCommandCode(Create): a policy session
    where an HMAC session proved the endorsement authValue authorizes TPM2_Create; with a
    wrong endorsement authValue PolicySecret itself fails (TPM_RC_BAD_AUTH, session 1)."""
    def scenario(ctx: ESAPI) -> list[int]:
        t = trial(ctx)
        ctx.policy_secret(ESYS_TR.ENDORSEMENT, t, TPM2B_NONCE(), TPM2B_DIGEST(), TPM2B_NONCE(), 0)
        ctx.policy_command_code(t, TPM2_CC.Create)
        key = parent_with_policy(ctx, bytes(ctx.policy_get_digest(t)))
        ctx.flush_context(t)
        hmac = ctx.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.HMAC, NULL_SYM,
                                      TPM2_ALG.SHA256)
        codes = []
        for auth in (b"", b"wrong"):
            ctx.tr_set_auth(ESYS_TR.ENDORSEMENT, auth)
            s = policy_session(ctx)
            codes.append(outcome(lambda: ctx.policy_secret(
                ESYS_TR.ENDORSEMENT, s, TPM2B_NONCE(), TPM2B_DIGEST(), TPM2B_NONCE(), 0,
                session1=hmac)))
            ctx.policy_command_code(s, TPM2_CC.Create)
            codes.append(outcome(lambda: ctx.create(key, SECRET, SEALED, session1=s)))
            ctx.flush_context(s)
        return codes

    assert on_both(esys, scenario) == [0, 0, BAD_AUTH_S1, POLICY_FAIL_S1]


def test_policy_secret_outputs_and_errors_match_swtpm(pair: dict[str, Emulator]) -> None:
    """PolicySecret's checks (nonceTPM P1, cpHashA P2, a second cpHash) and its outputs: no
    expiration gives an empty timeout and a NULL ticket; a negative one a timeout (with the
    expires-on-reset flag when no nonceTPM binds it to the session) and a ticket of the
    authorizing entity's hierarchy; the resulting digests agree."""
    results = {}
    for kind, emu in pair.items():
        send = emu.command
        flush_everything(send)
        p = start_session(send, session_type=1)

        def secret(auth_handle: int, nonce: bytes = b"", cp: bytes = b"", exp: int = 0) -> tuple:
            params = b2(nonce) + b2(cp) + b2(b"") + struct.pack(">i", exp)
            r = call(send, CC_POLICY_SECRET, [(auth_handle, u32(auth_handle)),
                                              (p.handle, u32(p.handle))], params, [Use(None)])
            if r.rc:
                return (r.rc,)
            size = struct.unpack_from(">H", r.parameters)[0]
            timeout = r.parameters[2:2 + size]
            tag, hierarchy, dsize = struct.unpack_from(">HIH", r.parameters, 2 + size)
            return (0, len(timeout), timeout[:1], tag, hierarchy, dsize)

        results[kind] = [
            secret(0x40000001), secret(0x40000001, exp=-10),
            secret(0x4000000B, nonce=p.nonce_tpm, exp=-10), secret(5, nonce=p.nonce_tpm, exp=10),
            secret(0x40000001, nonce=b"x" * 16), secret(0x40000001, cp=b"x" * 20),
            secret(0x40000001, cp=b"x" * 32), secret(0x40000001, cp=b"y" * 32),
            rc_of(send(cmd(CC_POLICY_GET_DIGEST, u32(p.handle))))]
        results[kind].append(send(cmd(CC_POLICY_GET_DIGEST, u32(p.handle)))[10:])
        flush_everything(send)
    assert results["swtpm_py"] == results["swtpm"]
    assert results["swtpm"][:8] == [
        (0, 0, b"", 0x8023, 0x40000007, 0), (0, 8, b"\x80", 0x8023, 0x40000001, 64),
        (0, 8, b"\x00", 0x8023, 0x4000000B, 64), (0, 0, b"", 0x8023, 0x40000007, 0),
        (0x1CF,), (0x2D5,), (0, 0, b"", 0x8023, 0x40000007, 0), (CPHASH,)]


# ---------------------------------------------------------------------------- errors


def raw(send: Callable[[bytes], bytes], code: int, handle: int, params: bytes = b"") -> int:
    """A policy command as raw bytes; its response code."""
    return rc_of(send(cmd(code, u32(handle) + params)))


def test_policy_command_errors_match_swtpm(pair: dict[str, Emulator]) -> None:
    """Argument checks of the policy commands, with swtpm's codes."""
    results = {}
    for kind, emu in pair.items():
        send = emu.command
        flush_everything(send)
        hmac_session = start_session(send).handle          # 0x02000000
        p = start_session(send, session_type=1).handle     # 0x03000001
        codes = [
            raw(send, CC_POLICY_LOCALITY, p, b"\x00"),
            raw(send, CC_POLICY_LOCALITY, p, b"\x02"),
            raw(send, CC_POLICY_LOCALITY, p, b"\x04"),     # no locality left
            raw(send, CC_POLICY_LOCALITY, p, b"\x40"),     # extended after ordinary
            raw(send, CC_POLICY_RESTART, p),
            raw(send, CC_POLICY_COMMAND_CODE, p, u32(CC_CREATE)),
            raw(send, CC_POLICY_COMMAND_CODE, p, u32(CC_LOAD)),
            raw(send, CC_POLICY_COMMAND_CODE, p, u32(0x1FF)),    # VALUE: another is set
            raw(send, CC_POLICY_RESTART, p),
            raw(send, CC_POLICY_COMMAND_CODE, p, u32(0x1FF)),
            raw(send, CC_POLICY_CP_HASH, p, b2(bytes(20))),
            raw(send, CC_POLICY_CP_HASH, p, b2(bytes(32))),
            raw(send, CC_POLICY_CP_HASH, p, b2(b"\x01" * 32)),
            raw(send, CC_POLICY_NAME_HASH, p, b2(bytes(32))),
            raw(send, CC_POLICY_TEMPLATE, p, b2(bytes(32))),
            raw(send, CC_POLICY_OR, p, u32(1) + b2(bytes(32))),
            raw(send, CC_POLICY_OR, p, u32(9) + b2(bytes(32)) * 9),
            raw(send, CC_POLICY_OR, p, u32(2) + b2(b"\x01" * 32) * 2),
            raw(send, CC_POLICY_PCR, p, b2(bytes(32)) + selection_bytes(TPM2_ALG.SHA256, [0])),
            raw(send, CC_POLICY_RESTART, p),
            raw(send, CC_POLICY_TEMPLATE, p, b2(bytes(32))),
            raw(send, CC_POLICY_TEMPLATE, p, b2(b"\x01" * 32)),
            raw(send, CC_POLICY_GET_DIGEST, hmac_session),
            raw(send, CC_POLICY_GET_DIGEST, 0x03000005),
            raw(send, CC_POLICY_GET_DIGEST, 0x03000000),
            raw(send, CC_POLICY_PASSWORD, p),
        ]
        results[kind] = codes
        flush_everything(send)
    assert results["swtpm_py"] == results["swtpm"]
    assert results["swtpm"] == [
        RANGE_P1, 0, RANGE_P1, RANGE_P1, 0, 0, VALUE_P1, VALUE_P1, 0, POLICY_CC_P1, SIZE_P1, 0,
        CPHASH,
        CPHASH, CPHASH, SIZE_P1, SIZE_P1, VALUE_P1, VALUE_P1, 0, 0, VALUE_P1, VALUE_H1,
        REFERENCE_H0, HANDLE_H1, 0]
