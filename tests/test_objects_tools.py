"""tpm2-tools 5.4 on objects, over ``-T swtpm:port=P``, outputs checked with ``cryptography``.

tpm2_readpublic, tpm2_getcap handles-transient and tpm2_flushcontext work on objects made with
raw commands. tpm2_createprimary and tpm2_create authorize the hierarchy or parent with an HMAC
session (TPM2_StartAuthSession, from the sessions work) even for an empty password; they are
used here with transient handles. tpm2_load and tpm2_loadexternal only work with context
files (TPM2_ContextSave / ContextLoad), and tpm2_createprimary -c writes one: those flows run
on both emulators.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from emulator import Emulator
from objcmd import (create_primary, ecc_template, load, parse_create_primary, parse_load, rc,
                    read_public, rsa_template)
from swtpm_py.tpm.constants import ALG
from swtpm_py.tpm.objects_wire import parse_public


def tool(emu: Emulator, cwd: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    """Run tpm2-tools' ``name`` against ``emu`` in ``cwd``; it must succeed."""
    proc = subprocess.run([name, "-T", emu.tcti, *args], capture_output=True, timeout=60,
                          cwd=cwd)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def transient_handles(emu: Emulator, cwd: Path) -> list[int]:
    """tpm2_getcap handles-transient, as integers."""
    out = yaml.safe_load(tool(emu, cwd, "tpm2_getcap", "handles-transient").stdout)
    return [int(h) if isinstance(h, int) else int(h, 16) for h in out or []]


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_readpublic_getcap_flushcontext(tmp_path: Path, kind: str) -> None:
    """Objects made by CreatePrimary are listed by tpm2_getcap; tpm2_readpublic writes the
    public key as PEM (equal to the public area's key), the Name (= nameAlg || SHA-256 of the
    public area) and the Qualified Name; tpm2_flushcontext removes one handle, then all."""
    emu = Emulator(kind, tmp_path / "state").start()
    try:
        made = [parse_create_primary(emu.command(create_primary(t)))
                for t in (rsa_template(), ecc_template())]
        assert transient_handles(emu, tmp_path) == [0x80000000, 0x80000001]
        for handle, out in zip((0x80000000, 0x80000001), made):
            tool(emu, tmp_path, "tpm2_readpublic", "-c", hex(handle), "-o", "key.pem", "-f",
                 "pem", "-n", "key.name", "-q", "key.qn")
            public_area = raw_public(emu, handle)
            public = parse_public(public_area)
            key = serialization.load_pem_public_key((tmp_path / "key.pem").read_bytes())
            if public.type == ALG.RSA:
                assert isinstance(key, rsa.RSAPublicKey)
                assert key.public_numbers().n == int.from_bytes(public.unique, "big")
                assert key.public_numbers().e == 65537
            else:
                assert isinstance(key, ec.EllipticCurvePublicKey)
                assert (key.public_numbers().x, key.public_numbers().y) == (
                    int.from_bytes(public.unique.x, "big"), int.from_bytes(public.unique.y, "big"))
            name = (tmp_path / "key.name").read_bytes()
            assert name == b"\x00\x0b" + hashlib.sha256(public_area).digest() == out["name"]
            assert (tmp_path / "key.qn").read_bytes() == b"\x00\x0b" + hashlib.sha256(
                b"\x40\x00\x00\x01" + name).digest()
        tool(emu, tmp_path, "tpm2_flushcontext", "0x80000001")
        assert transient_handles(emu, tmp_path) == [0x80000000]
        tool(emu, tmp_path, "tpm2_flushcontext", "-t")
        assert transient_handles(emu, tmp_path) == []
    finally:
        emu.cleanup()


def raw_public(emu: Emulator, handle: int) -> bytes:
    """The TPMT_PUBLIC of a loaded object, read with a raw TPM2_ReadPublic."""
    resp = emu.command(read_public(handle))
    assert rc(resp) == 0
    size = struct.unpack(">H", resp[10:12])[0]
    return resp[12:12 + size]


def tools_flow(emu: Emulator, cwd: Path) -> None:
    """tpm2_createprimary -c, tpm2_create, tpm2_load, tpm2_readpublic -f pem,
    tpm2_flushcontext; the child's PEM is the public key in key.pub. Without a resource
    manager every tool leaves the contexts it loaded in the TPM's three slots, so the
    transient objects are flushed between the steps (as tpm2-tools' own tests do)."""
    tool(emu, cwd, "tpm2_createprimary", "-C", "o", "-c", "primary.ctx")
    tool(emu, cwd, "tpm2_flushcontext", "-t")
    tool(emu, cwd, "tpm2_create", "-C", "primary.ctx", "-G", "ecc256", "-u", "key.pub",
         "-r", "key.priv")
    tool(emu, cwd, "tpm2_flushcontext", "-t")
    tool(emu, cwd, "tpm2_load", "-C", "primary.ctx", "-u", "key.pub", "-r", "key.priv",
         "-c", "key.ctx")
    tool(emu, cwd, "tpm2_flushcontext", "-t")
    tool(emu, cwd, "tpm2_readpublic", "-c", "key.ctx", "-o", "key.pem", "-f", "pem")
    public = parse_public((cwd / "key.pub").read_bytes()[2:])
    key = serialization.load_pem_public_key((cwd / "key.pem").read_bytes())
    assert key.public_numbers().x == int.from_bytes(public.unique.x, "big")
    tool(emu, cwd, "tpm2_flushcontext", "-t")


def tools_loadexternal(emu: Emulator, cwd: Path) -> None:
    """tpm2_loadexternal of a PEM public key from ``cryptography``; read back as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    (cwd / "ext.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    tool(emu, cwd, "tpm2_loadexternal", "-C", "o", "-G", "ecc", "-u", "ext.pem",
         "-c", "ext.ctx")
    tool(emu, cwd, "tpm2_readpublic", "-c", "ext.ctx", "-o", "back.pem", "-f", "pem")
    back = serialization.load_pem_public_key((cwd / "back.pem").read_bytes())
    assert back.public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_tools_create_load_flow(tmp_path: Path, kind: str) -> None:
    """The tpm2-tools key workflow end to end."""
    emu = Emulator(kind, tmp_path / "state").start()
    try:
        tools_flow(emu, tmp_path)
    finally:
        emu.cleanup()


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_tools_loadexternal(tmp_path: Path, kind: str) -> None:
    """tpm2_loadexternal with a context file."""
    emu = Emulator(kind, tmp_path / "state").start()
    try:
        tools_loadexternal(emu, tmp_path)
    finally:
        emu.cleanup()


@pytest.mark.parametrize("kind", ["swtpm_py", "swtpm"])
def test_tools_createprimary_and_create_by_handle(tmp_path: Path, kind: str) -> None:
    """tpm2_createprimary leaves the primary at 0x80000000 and prints its public key;
    tpm2_create -C 0x80000000 writes key.pub / key.priv: the public area is an ECC P-256 key
    whose Name the TPM computes on Load, and the private area loads under the primary (so the
    tool carried it through its session unchanged); tpm2_readpublic writes the key as PEM."""
    emu = Emulator(kind, tmp_path / "state").start()
    try:
        out = yaml.safe_load(tool(emu, tmp_path, "tpm2_createprimary", "-C", "o").stdout)
        primary_public = parse_public(raw_public(emu, 0x80000000))
        assert out["attributes"]["raw"] == primary_public.objectAttributes == 0x30072
        assert bytes.fromhex(out["rsa"]) == primary_public.unique
        tool(emu, tmp_path, "tpm2_create", "-C", "0x80000000", "-G", "ecc256", "-u", "key.pub",
             "-r", "key.priv")
        public_area = (tmp_path / "key.pub").read_bytes()[2:]
        private = (tmp_path / "key.priv").read_bytes()[2:]
        public = parse_public(public_area)
        assert (public.type, public.parameters.curveID) == (ALG.ECC, 3)
        handle, name = parse_load(emu.command(load(0x80000000, private, public_area)))
        assert name == b"\x00\x0b" + hashlib.sha256(public_area).digest()
        tool(emu, tmp_path, "tpm2_readpublic", "-c", hex(handle), "-o", "key.pem", "-f", "pem")
        key = serialization.load_pem_public_key((tmp_path / "key.pem").read_bytes())
        assert (key.public_numbers().x, key.public_numbers().y) == (
            int.from_bytes(public.unique.x, "big"), int.from_bytes(public.unique.y, "big"))
    finally:
        emu.cleanup()
