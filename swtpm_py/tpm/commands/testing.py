"""Testing commands (Part 3 §10): TPM2_SelfTest, TPM2_IncrementalSelfTest, TPM2_GetTestResult
and TPM2_TestParms.

The self tests are the known-answer tests of :mod:`swtpm_py.tpm.algorithms` (every hash with
its HMAC, and KDFa), run in the TPM's own code paths. They take well under a millisecond, so
they run synchronously (never TPM_RC_TESTING), and whenever a test is due the whole suite runs:
Part 3 §10.3 lets the TPM test more than it is asked to. After _TPM_Init nothing is tested
(``VolatileData.self_tested`` is False); the first SelfTest, IncrementalSelfTest naming a
testable algorithm, or GetTestResult runs the suite. A wrong answer puts the TPM in failure
mode (Part 1 §12.3), where only GetTestResult and GetCapability run.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import construct as c

from .. import algorithms
from ..algorithms import TPMT_PUBLIC_PARMS
from ..constants import CC, RC
from ..errors import TpmError
from ..registry import command
from ..wire import MAX_DIGEST_BUFFER, TPM2B_MAX_BUFFER, UINT8, UINT16, UINT32, Checked

if TYPE_CHECKING:
    from ..core import CommandContext, Tpm

log = logging.getLogger("swtpm_py.tpm")

#: Part 2 §10.9.3 TPML_ALG: at most MAX_ALG_LIST_SIZE algorithms; more is TPM_RC_SIZE.
MAX_ALG_LIST_SIZE = 64


def _check_alg_count(count: int) -> None:
    if count > MAX_ALG_LIST_SIZE:
        raise TpmError(RC.SIZE, detail=f"{count} algorithms in a TPML_ALG")


def _check_yes_no(value: int) -> None:
    # Part 2 §9.2 TPMI_YES_NO: anything but NO (0) or YES (1) is TPM_RC_VALUE.
    if value > 1:
        raise TpmError(RC.VALUE, detail=f"TPMI_YES_NO {value}")


TPML_ALG = c.PrefixedArray(Checked(UINT32, _check_alg_count), UINT16)
TPMI_YES_NO = Checked(UINT8, _check_yes_no)
#: TPMI_YES_NO's YES.
YES = 1


class SelfTestFailure(Exception):
    """A known-answer test gave a wrong answer."""


def run_self_tests(tpm: Tpm) -> None:
    """Run every known-answer test. On a wrong answer the TPM enters failure mode and
    :class:`SelfTestFailure` is raised; otherwise the TPM counts as fully tested."""
    for alg in algorithms.testable():
        if alg.self_test is not None and not alg.self_test():
            reason = f"self test of {alg.name} failed: wrong known answer"
            tpm.enter_failure(reason)
            tpm.vol.self_tested = False
            raise SelfTestFailure(reason)
    tpm.vol.self_tested = True


def _test_or_fail(tpm: Tpm) -> None:
    """Run the suite; a failure is the command's TPM_RC_FAILURE."""
    try:
        run_self_tests(tpm)
    except SelfTestFailure as exc:
        raise TpmError(RC.FAILURE, detail=str(exc)) from None


def to_do(tpm: Tpm) -> list[int]:
    """The algorithms still to be tested (the toDoList of Part 3 §10.3), ascending."""
    if tpm.vol.self_tested:
        return []
    return [a.alg for a in algorithms.testable()]


@command(CC.SelfTest, params=(TPMI_YES_NO,))
def self_test(ctx: CommandContext, full_test: int) -> None:
    """Part 3 §10.2: test everything (fullTest YES) or what has not been tested yet (NO)."""
    if full_test or not ctx.tpm.vol.self_tested:
        _test_or_fail(ctx.tpm)


@command(CC.IncrementalSelfTest, params=(TPML_ALG,), response=(TPML_ALG,))
def incremental_self_test(ctx: CommandContext, to_test: list) -> list[int]:
    """Part 3 §10.3: test the listed algorithms that have not been tested; return those
    still untested. An algorithm the TPM does not implement is TPM_RC_VALUE (as swtpm)."""
    for alg in to_test:
        if alg not in algorithms.ALGORITHMS:
            raise TpmError(RC.VALUE, parameter=1, detail=f"algorithm 0x{alg:04x}")
    pending = set(to_do(ctx.tpm))
    if pending.intersection(to_test):
        _test_or_fail(ctx.tpm)
    return to_do(ctx.tpm)


@command(CC.GetTestResult, response=(TPM2B_MAX_BUFFER, UINT32))
def get_test_result(ctx: CommandContext) -> tuple[bytes, int]:
    """Part 3 §10.4: the outcome of the self tests. Tests not yet run are run first, so the
    answer is SUCCESS only for a TPM whose tests have passed. In failure mode the answer is
    TPM_RC_FAILURE with the reason, as text, in outData."""
    tpm = ctx.tpm
    if tpm.failure is None and not tpm.vol.self_tested:
        try:
            run_self_tests(tpm)
        except SelfTestFailure:
            pass
    if tpm.failure is not None:
        return tpm.failure.encode("utf-8", "replace")[:MAX_DIGEST_BUFFER], RC.FAILURE
    return b"", RC.SUCCESS


@command(CC.TestParms, params=(TPMT_PUBLIC_PARMS,))
def test_parms(ctx: CommandContext, parms: object) -> None:
    """Part 3 §10.5: whether an object with these parameters could be created. Every check
    is part of unmarshalling TPMT_PUBLIC_PARMS against the algorithms this TPM implements
    (Part 2 §12.2.3.8), so reaching the handler means they are supported."""
