#!/usr/bin/env bash
# A QEMU VM with a TPM 2.0 from swtpm_py whose state lives in a raw blobstore image (a plain
# file, or a block device such as an LVM volume given as DIR/tpm.raw's path).
#
#   examples/qemu-blobstore-raw.sh [DIR] [extra QEMU arguments]
#
# Same as qemu-blobstore-qcow2.sh with format=raw; q35 with the CRB interface this time.
# To see the size the store needs before creating a volume for it:
#   python3 -m swtpm_py socket --tpm2 --blobstore name=tpm,drive=d0,showsize \
#       --drive id=d0,file=DIR/tpm.raw,format=raw
# PYTHON selects the interpreter that has swtpm_py installed (default: python3).
set -euo pipefail

DIR="${1:-./vm-tpm}"
shift || true
mkdir -p "$DIR"
SOCK="$DIR/swtpm.sock"
rm -f "$SOCK"

"${PYTHON:-python3}" -m swtpm_py socket --tpm2 \
    --ctrl type=unixio,path="$SOCK",mode=0600 \
    --blobstore name=tpm,drive=d0,create \
    --drive id=d0,file="$DIR/tpm.raw",format=raw \
    --log file="$DIR/swtpm.log",level=1 \
    --terminate &
TPM_PID=$!
trap 'kill "$TPM_PID" 2>/dev/null || true' EXIT

for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done

qemu-system-x86_64 -machine q35 -accel tcg -m 512 -nographic \
    -chardev socket,id=chrtpm,path="$SOCK" \
    -tpmdev emulator,id=tpm0,chardev=chrtpm \
    -device tpm-crb,tpmdev=tpm0 \
    "$@"
wait "$TPM_PID" || true
