#!/usr/bin/env bash
# THE test command: set up what the tests need (once), then run pytest.
#
#   scripts/test.sh                       # the whole suite
#   scripts/test.sh tests/test_tools.py -k pcr   # any pytest arguments pass through
#
# Installs, only when missing: the Debian packages (the reference swtpm and swtpm_ioctl,
# tpm2-tools, libtss2 + a compiler for tpm2-pytss, qemu-img), .venv, the project with its
# `test` extra, and the Linux guest's kernel and busybox (cached). The exit code is pytest's,
# except that "no tests ran" (5) is a failure too.
set -euo pipefail

# shellcheck source=scripts/setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

# What the tests run: the reference swtpm and swtpm_ioctl, tpm2-tools and its swtpm TCTI,
# qemu-img, QEMU with SeaBIOS (tests/test_qemu.py); what tpm2-pytss needs to build (libtss2-dev via pkg-config, a C compiler, Python
# headers for Debian's interpreter).
ensure_apt swtpm swtpm-tools tpm2-tools libtss2-dev libtss2-tcti-swtpm0 pkg-config qemu-utils \
    qemu-system-x86 seabios build-essential python3-dev
ensure_venv
ensure_project "[test]" swtpm_py blobstore tpm2_pytss pytest hypothesis yaml pytest_timeout
# The Linux guest of tests/test_qemu_linux.py: Debian's kernel and busybox-static, fetched once
# with `apt-get download` into ~/.cache/swtpm_py/guest (nothing is installed; a no-op later).
"$VENV_PY" "$REPO_ROOT/tests/guest/build.py" >/dev/null \
    || log "could not fetch the Linux guest's kernel/busybox: the Linux guest tests will fail"

cd "$REPO_ROOT"
status=0
"$VENV_PY" -m pytest "$@" </dev/null || status=$?
if [ "$status" -eq 5 ]; then
    echo "scripts/test.sh: pytest collected no tests: failing" >&2
    status=1
fi
exit "$status"
