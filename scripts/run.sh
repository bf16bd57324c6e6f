#!/usr/bin/env bash
# THE run command: set up (once), then start swtpm_py the way tpm2-tss users start swtpm.
#
#   scripts/run.sh                        # TCP data port 2321, control port 2322
#   TPM_PORT=2331 scripts/run.sh --log level=20   # extra arguments go to `swtpm_py socket`
#
# The TPM state lives where `swtpm_py socket` puts it by default (a per-user data directory)
# unless a --tpmstate argument says otherwise.
set -euo pipefail

# shellcheck source=scripts/setup.sh
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

ensure_venv
ensure_project "" swtpm_py blobstore

port="${TPM_PORT:-2321}"
cat >&2 <<EOF
[run] swtpm_py listens on 127.0.0.1:$port (TPM commands) and :$((port + 1)) (control).
[run] Talk to it with tpm2-tools (apt-get install tpm2-tools), for example:
[run]     tpm2_getrandom -T swtpm:port=$port 8 --hex
[run]     tpm2_pcrread -T swtpm:port=$port sha256:0,1,2
[run] Stop it with Ctrl-C (or: swtpm_ioctl --tcp 127.0.0.1:$((port + 1)) -s).
EOF
exec "$VENV/bin/swtpm_py" socket --tpm2 \
    --server "type=tcp,port=$port" --ctrl "type=tcp,port=$((port + 1))" \
    --flags not-need-init,startup-clear "$@"
