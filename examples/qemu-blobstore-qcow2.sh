#!/usr/bin/env bash
# A QEMU VM with a TPM 2.0 from swtpm_py whose state lives in a qcow2 blobstore image.
#
#   examples/qemu-blobstore-qcow2.sh [DIR] [extra QEMU arguments, e.g. a disk or -cdrom]
#
# DIR (default ./vm-tpm) holds tpm.qcow2 (created on first use at the size the TPM needs; its
# internal snapshots are qemu-img's: `qemu-img snapshot -l DIR/tpm.qcow2`), the control socket
# and the logs. swtpm_py is started the way libvirt starts swtpm (--ctrl type=unixio, --terminate);
# QEMU connects to the control socket, passes the data channel over it (SET_DATAFD) and, at quit,
# sends SHUTDOWN, which ends swtpm_py. TCG is used, so no KVM is needed; add -accel kvm if you have it.
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
    --drive id=d0,file="$DIR/tpm.qcow2",format=qcow2 \
    --log file="$DIR/swtpm.log",level=1 \
    --terminate &
TPM_PID=$!
trap 'kill "$TPM_PID" 2>/dev/null || true' EXIT

# Wait for the control socket (QEMU refuses to start without it).
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done

qemu-system-x86_64 -machine pc -accel tcg -m 512 -nographic \
    -chardev socket,id=chrtpm,path="$SOCK" \
    -tpmdev emulator,id=tpm0,chardev=chrtpm \
    -device tpm-tis,tpmdev=tpm0 \
    "$@"
wait "$TPM_PID" || true
