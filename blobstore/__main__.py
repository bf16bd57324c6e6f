"""The ``blobstore`` command-line tool: inspect and maintain blobstore images, qemu-img style.

Verbs: create, format, info, list, get, put, check, showsize, snapshot. Blobs are named
OWNER/NAME; sizes take qemu-img's suffixes (k, M, G: powers of 1024).

Exit codes: 0 success; 1 the operation failed (the message says why); 2 a usage error.
``check`` has its own: 0 clean; 1 an old copy was used because a newer slot (or directory copy)
is damaged -- with ``--repair`` it was rewritten; 2 damaged (a blob without any valid copy),
not formatted, or incompatible; 3 the image could not be checked at all (missing, locked, I/O).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Any, BinaryIO, Sequence

from .format import DEFAULT_SECTOR_SIZE, MAX_LABEL_BYTES, StoreError
from .image.base import Image, ImageError, ImageLockedError
from .image.open import FORMATS, create_image, open_image
from .options import format_for_new_file, showsize_sentence
from .store import (BlobInfo, BlobStore, CheckStatus, DamagedError, ImageTooSmallError,
                    IncompatibleError, NotFormattedError, Registration, SlotInfo, required_size)

PROG = "blobstore"
_SUFFIXES = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class _Failure(Exception):
    """A failed operation: printed as ``blobstore: MESSAGE``, exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def parse_size(text: str) -> int:
    """A byte count with an optional k/M/G/T suffix (powers of 1024), like qemu-img."""
    t = text.strip().lower()
    t = t[:-1] if t.endswith("ib") and len(t) > 2 else t
    unit = t[-1:] if t[-1:].isalpha() else ""
    number = t[:-1] if unit else t
    if unit not in _SUFFIXES or not number.isdigit():
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (use e.g. 4096, 64k, 1M)")
    return int(number) * _SUFFIXES[unit]


def parse_blob_name(text: str) -> tuple[str, str]:
    """OWNER/NAME -> (owner, name); the name may itself contain '/'."""
    owner, slash, name = text.partition("/")
    if not slash or not owner or not name:
        raise argparse.ArgumentTypeError(f"invalid blob {text!r}: write it as OWNER/NAME")
    return owner, name


def parse_blob_spec(text: str) -> Registration:
    """OWNER/NAME=MAXSIZE -> Registration."""
    blob, eq, size = text.rpartition("=")
    if not eq:
        raise argparse.ArgumentTypeError(f"invalid blob {text!r}: write it as "
                                         f"OWNER/NAME=MAXSIZE (e.g. tpm/permanent=64k)")
    owner, name = parse_blob_name(blob)
    try:
        return Registration(owner, name, parse_size(size))
    except StoreError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ts(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone.utc) \
        .isoformat(timespec="seconds")


# -- opening -----------------------------------------------------------------------------------


def _open(args: argparse.Namespace, *, write: bool) -> Image:
    if not os.path.lexists(args.file):
        raise _Failure(f"{args.file}: no such file", 3 if args.verb == "check" else 1)
    try:
        return open_image(args.file, args.format, readonly=not write,
                          force_share=getattr(args, "force_share", False) and not write)
    except ImageLockedError as e:
        hint = "" if write else " (add -U to inspect it anyway)"
        raise _Failure(f"{e}{hint}", 3 if args.verb == "check" else 1) from None
    except ImageError as e:
        raise _Failure(str(e), 3 if args.verb == "check" else 1) from None


def _open_store(args: argparse.Namespace, *, write: bool,
                registrations: Sequence[Registration] = ()) -> BlobStore:
    image = _open(args, write=write)
    try:
        return BlobStore.open(image, registrations)
    except NotFormattedError as e:
        image.close()
        raise _Failure(f"{args.file}: {e}; create a store with `blobstore format {args.file} "
                       f"--blob OWNER/NAME=SIZE ...`", 2 if args.verb == "check" else 1) \
            from None
    except (DamagedError, IncompatibleError) as e:
        image.close()
        raise _Failure(f"{args.file}: {e}", 2 if args.verb == "check" else 1) from None
    except ImageTooSmallError as e:
        image.close()
        raise _Failure(f"{args.file}: {e} (e.g. `qemu-img resize -f {image.format_name} "
                       f"{args.file} {e.required}`)") from None
    except (StoreError, ImageError) as e:
        image.close()
        raise _Failure(f"{args.file}: {e}", 3 if args.verb == "check" else 1) from None
    except BaseException:
        image.close()
        raise


# -- verbs -------------------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace) -> int:
    """Create the image file and format a store in it."""
    need = required_size(args.blob, args.sector_size)
    size = args.size if args.size is not None else need
    if size < need:
        raise _Failure(f"--size {size} is too small: these blobs need {need} bytes")
    if os.path.lexists(args.file) and os.path.getsize(args.file):
        raise _Failure(f"{args.file} already exists; use `blobstore format` to format it again")
    fmt = args.format or format_for_new_file(args.file)
    try:
        if fmt == "qcow2":
            create_image(args.file, fmt, size, args.cluster_size)
        else:
            create_image(args.file, fmt, size)
    except ImageError as e:
        raise _Failure(str(e)) from None
    with BlobStore.format(open_image(args.file, fmt), args.blob, sector_size=args.sector_size,
                          label=args.name) as store:
        print(f"Created {fmt} image {args.file} ({size} bytes) with blobstore {store.uuid}: "
              f"{len(args.blob)} blob(s), {need} bytes needed")
    return 0


def cmd_format(args: argparse.Namespace) -> int:
    """Format a store in an existing image (destroying its content)."""
    image = _open(args, write=True)
    try:
        store = BlobStore.format(image, args.blob, sector_size=args.sector_size,
                                 label=args.name)
    except StoreError as e:
        image.close()
        raise _Failure(f"{args.file}: {e}") from None
    with store:
        print(f"Formatted {args.file}: blobstore {store.uuid} with {len(args.blob)} blob(s)")
    return 0


def _slot_json(s: SlotInfo) -> dict[str, Any]:
    d: dict[str, Any] = {"slot": s.number, "offset": s.offset, "state": s.state.value}
    if s.header is not None:
        d.update(sequence=s.header.seq, length=s.header.length, deleted=s.header.deleted,
                 modified=_ts(s.header.mtime_ns), modified_ns=s.header.mtime_ns)
    if s.problem:
        d["problem"] = s.problem
    return d


def _blob_json(b: BlobInfo) -> dict[str, Any]:
    h = b.current_header
    return {
        "owner": b.owner, "name": b.name, "present": b.present, "size": b.length,
        "max_size": b.max_size, "current_slot": b.current,
        "sequence": h.seq if h else None,
        "modified": _ts(h.mtime_ns) if h else None,
        "created": _ts(b.created_ns), "created_ns": b.created_ns, "producer": b.producer,
        "slots": [_slot_json(s) for s in b.slots],
    }


def cmd_info(args: argparse.Namespace) -> int:
    """Geometry, format version and every blob with both slots."""
    with _open_store(args, write=False) as store:
        sb = store.superblock
        info = {
            "image": args.file, "image_format": store.image.format_name,
            "image_size": store.image.size(), "store_size": store.end,
            "format_version": sb.version, "uuid": str(store.uuid), "label": sb.label,
            "created": _ts(sb.created_ns), "producer": sb.producer,
            "sector_size": sb.sector_size,
            "incompatible_features": sb.incompatible_features,
            "compatible_features": sb.compatible_features,
            "directory": {"capacity": sb.directory_capacity,
                          "offsets": list(sb.directory_offsets),
                          "copy_in_use": "AB"[store.directory_copy],
                          "generation": store.directory_generation},
            "blobs": [_blob_json(b) for b in store.blobs()],
        }
    if args.output == "json":
        print(json.dumps(info, indent=2))
        return 0
    print(f"image: {args.file}")
    print(f"image format: {info['image_format']}, {info['image_size']} bytes "
          f"(the store uses {info['store_size']})")
    print(f"blobstore format version: {sb.version}")
    print(f"uuid: {info['uuid']}")
    if sb.label:
        print(f"name: {sb.label}")
    print(f"created: {info['created']} by {sb.producer}")
    print(f"sector size: {sb.sector_size}")
    d = info["directory"]
    print(f"directory: {len(info['blobs'])} of {d['capacity']} entries, copy "
          f"{d['copy_in_use']} (generation {d['generation']}) in use")
    for b in info["blobs"]:
        size = f"{b['size']} bytes" if b["present"] else "absent"
        print(f"blob {b['owner']}/{b['name']}: {size}, max {b['max_size']}, "
              f"sequence {b['sequence']}, modified {b['modified']}, created {b['created']}")
        for s in b["slots"]:
            extra = ""
            if "sequence" in s:
                extra = f", sequence {s['sequence']}, {s['length']} bytes" + \
                    (" (deletion)" if s["deleted"] else "") + f", modified {s['modified']}"
            if "problem" in s:
                extra += f": {s['problem']}"
            mark = " (current)" if s["slot"] == b["current_slot"] else ""
            print(f"  slot {s['slot']} at {s['offset']}: {s['state']}{mark}{extra}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """One line per blob: OWNER/NAME, size (or -), max size, modification time."""
    with _open_store(args, write=False) as store:
        blobs = store.blobs()
    rows = [(f"{b.owner}/{b.name}", str(b.length) if b.present else "-", str(b.max_size),
             _ts(b.current_header.mtime_ns) if b.current_header else "-") for b in blobs]
    header = ("BLOB", "SIZE", "MAX", "MODIFIED")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Write a blob's bytes to stdout or a file."""
    owner, name = args.blob
    with _open_store(args, write=False) as store:
        try:
            data = store.read(owner, name)
        except StoreError as e:
            raise _Failure(f"{args.file}: {e}") from None
    if data is None:
        raise _Failure(f"{args.file}: blob {owner}/{name} is absent (never written, or "
                       f"deleted)")
    if args.output:
        with open(args.output, "wb") as f:
            f.write(data)
    else:
        out: BinaryIO = sys.stdout.buffer
        out.write(data)
        out.flush()
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    """Replace a blob's bytes from a file or stdin (crash-safe, like any update)."""
    owner, name = args.blob
    if args.input:
        try:
            with open(args.input, "rb") as f:
                data = f.read()
        except OSError as e:
            raise _Failure(f"cannot read {args.input}: {e.strerror}") from None
    elif sys.stdin.isatty():
        raise _Failure("put reads the blob from stdin, which is a terminal: pipe the data in "
                       "or give -i FILE")
    else:
        data = sys.stdin.buffer.read()
    regs = [Registration(owner, name, args.max_size)] if args.max_size is not None else []
    with _open_store(args, write=True, registrations=regs) as store:
        try:
            store.write(owner, name, data)
        except StoreError as e:
            hint = ""
            if (owner, name) not in store.names():
                hint = " (add --max-size SIZE to add it)"
            raise _Failure(f"{args.file}: {e}{hint}") from None
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Verify every slot; exit code as documented in the module docstring."""
    with _open_store(args, write=args.repair) as store:
        report = store.check(repair=args.repair)
        blobs = len(store.names())
    for p in report.problems:
        print(p)
    for r in report.repaired:
        print(f"repaired: {r}")
    verdict = {CheckStatus.CLEAN: "no errors were found",
               CheckStatus.OLD_COPY_USED: "an older copy is used where a newer one is damaged"
               + (" (repaired)" if report.repaired else " (--repair rewrites it)"),
               CheckStatus.DAMAGED: "the store is damaged: some blob has no valid copy"}
    print(f"{args.file}: {blobs} blob(s) checked: {verdict[report.status]}")
    return int(report.status)


def cmd_showsize(args: argparse.Namespace) -> int:
    """Print the image size these blobs need."""
    need = required_size(args.blob, args.sector_size)
    if args.name and args.drive:
        print(showsize_sentence(args.name, args.drive, need))
    else:
        print(f"Blobstore requires {need // 1024}kb.")
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Internal snapshots of a qcow2 image (qemu-img snapshot's options)."""
    image = _open(args, write=not args.list)
    try:
        if not image.supports_snapshots:
            raise _Failure(f"{args.file}: {image.format_name} images have no internal "
                           f"snapshots (use a qcow2 image)")
        if args.list:
            snaps = image.snapshot_list()
            print("Snapshot list:")
            print(f"{'ID':<8}{'TAG':<24}{'DATE':<27}DISK SIZE")
            for s in snaps:
                date = _ts(s.date_sec * 10**9 + s.date_nsec)
                print(f"{s.id:<8}{s.name:<24}{date:<27}{s.disk_size}")
        elif args.create:
            image.snapshot_create(args.create)
        elif args.apply:
            image.snapshot_apply(args.apply)
        else:
            image.snapshot_delete(args.delete)
    except ImageError as e:
        raise _Failure(str(e)) from None
    finally:
        image.close()
    return 0


# -- argument parsing --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Inspect and maintain blobstore images (raw or qcow2).",
        epilog="Exit codes: 0 success, 1 failure, 2 usage error; `check`: 0 clean, 1 an old "
               "copy was used (newer one damaged), 2 damaged or not formatted, 3 not checkable.")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    def image_args(sp: argparse.ArgumentParser, share: bool = False) -> None:
        sp.add_argument("file", metavar="FILE", help="the image file")
        sp.add_argument("-f", "--format", choices=FORMATS,
                        help="image format (default: probed)")
        if share:
            sp.add_argument("-U", "--force-share", action="store_true",
                            help="open even if another process (QEMU, the emulator) uses it")

    def blob_args(sp: argparse.ArgumentParser, required: bool) -> None:
        sp.add_argument("--blob", metavar="OWNER/NAME=MAXSIZE", type=parse_blob_spec,
                        action="append", default=[], required=required,
                        help="register a blob (repeat for each)")
        sp.add_argument("--sector-size", type=parse_size, default=DEFAULT_SECTOR_SIZE,
                        help=f"alignment of every slot (default {DEFAULT_SECTOR_SIZE})")

    sp = sub.add_parser("create", help="create an image and format a store in it")
    image_args(sp)
    blob_args(sp, False)
    sp.add_argument("--size", type=parse_size, help="image size (default: what the blobs need)")
    sp.add_argument("--name", default="", help="the store's name (checked by --blobstore name=)")
    sp.add_argument("--cluster-size", type=parse_size, default=65536, help="qcow2 cluster size")
    sp.set_defaults(func=cmd_create)

    sp = sub.add_parser("format", help="format a store in an existing image (erases it)")
    image_args(sp)
    blob_args(sp, False)
    sp.add_argument("--name", default="", help="the store's name")
    sp.set_defaults(func=cmd_format)

    sp = sub.add_parser("info", help="geometry, version and every blob's slots")
    image_args(sp, share=True)
    sp.add_argument("--output", choices=("human", "json"), default="human")
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("list", help="one line per blob")
    image_args(sp, share=True)
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("get", help="write a blob to stdout or a file")
    image_args(sp, share=True)
    sp.add_argument("blob", metavar="OWNER/NAME", type=parse_blob_name)
    sp.add_argument("-o", "--output", metavar="OUT", help="write here instead of stdout")
    sp.set_defaults(func=cmd_get)

    sp = sub.add_parser("put", help="replace a blob from a file or stdin")
    image_args(sp)
    sp.add_argument("blob", metavar="OWNER/NAME", type=parse_blob_name)
    sp.add_argument("-i", "--input", metavar="IN", help="read here instead of stdin")
    sp.add_argument("--max-size", type=parse_size,
                    help="add the blob (or grow its slots) with this max size")
    sp.set_defaults(func=cmd_put)

    sp = sub.add_parser("check", help="verify every slot (exit 0 clean, 1 old copy used, "
                                      "2 damaged, 3 not checkable)")
    image_args(sp, share=True)
    sp.add_argument("-r", "--repair", action="store_true",
                    help="rewrite damaged copies from their valid twin")
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("showsize", help="print the image size the blobs need")
    blob_args(sp, True)
    sp.add_argument("--name", help="blobstore name, for the seed's sentence")
    sp.add_argument("--drive", help="drive id, for the seed's sentence")
    sp.set_defaults(func=cmd_showsize)

    sp = sub.add_parser("snapshot", help="qcow2 internal snapshots")
    image_args(sp)
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("-c", dest="create", metavar="SNAPSHOT", help="create a snapshot")
    g.add_argument("-a", dest="apply", metavar="SNAPSHOT", help="revert to a snapshot")
    g.add_argument("-l", dest="list", action="store_true", help="list snapshots")
    g.add_argument("-d", dest="delete", metavar="SNAPSHOT", help="delete a snapshot")
    sp.set_defaults(func=cmd_snapshot)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``blobstore`` tool; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verb == "check" and args.repair and args.force_share:
        parser.error("check: --repair writes the image; it cannot be combined with -U")
    if args.verb in ("create", "format", "showsize"):
        seen = set()
        for r in args.blob:
            if r.key in seen:
                parser.error(f"{args.verb}: blob {r.owner}/{r.name} is given twice")
            seen.add(r.key)
        try:
            required_size([], args.sector_size)
        except ValueError as e:
            parser.error(f"{args.verb}: --sector-size: {e}")
        name = args.name or ""
        if "\0" in name or len(name.encode()) > MAX_LABEL_BYTES:
            parser.error(f"{args.verb}: --name must be at most {MAX_LABEL_BYTES} UTF-8 bytes")
    try:
        return args.func(args)
    except _Failure as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.code
    except (StoreError, ImageError) as e:
        print(f"{PROG}: {args.file}: {e}", file=sys.stderr)
        return 3 if args.verb == "check" else 1
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
