"""The seed's command-line options and what they do.

``--drive id=ID,file=PATH[,format=raw|qcow2]`` names an image; ``--blobstore
name=NAME,drive=ID[,ACTION]`` puts a store on it, where ACTION is one of:

- ``showsize``: print ``Blobstore NAME on drive with ID ID requires Nkb.`` (N KiB, the exact
  size :func:`~blobstore.store.required_size` computes) and do nothing else;
- ``create``: if the file is missing or empty, create it (raw, or qcow2 when ``format=qcow2``
  or the file name ends in .qcow2) at the required size; format a store that is not formatted
  (all zero); grow an image that is too small when its format can grow; then start;
- ``format``: always format (a clean store), on an image big enough;
- ``formatifbad``: format when the image holds no valid store (unformatted, damaged or
  truncated); a valid store is never touched, nor one of an incompatible (newer) format;
- none: an unformatted or damaged store, or an image too small, is an error naming the fix.

Values follow QEMU's option syntax: a comma inside a value is written twice (``file=a,,b``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterable, TextIO

from .format import PRODUCER
from .image.base import Image, ImageError
from .image.open import FORMATS, create_image, open_image
from .store import (SIZE_GRANULARITY, BlobStore, DamagedError, ImageTooSmallError,
                    IncompatibleError, NotFormattedError, Registration, RegistrationError,
                    StoreError, required_size)

#: The actions ``--blobstore`` accepts (at most one).
ACTIONS = ("showsize", "create", "format", "formatifbad")


class OptionError(StoreError, ValueError):
    """A ``--drive`` or ``--blobstore`` option is malformed; the message names the option."""


class SetupError(StoreError):
    """The store could not be opened as the options ask; the message says why and which option
    fixes it. ``__cause__`` is the underlying StoreError or ImageError."""


@dataclass(frozen=True)
class DriveOption:
    """A parsed ``--drive``: ``format`` is None when it should be probed."""

    id: str
    file: str
    format: str | None = None


@dataclass(frozen=True)
class BlobstoreOption:
    """A parsed ``--blobstore``: ``action`` is one of :data:`ACTIONS` or None."""

    name: str
    drive: str
    action: str | None = None


def split_options(text: str) -> list[tuple[str, str | None]]:
    """Split QEMU-style ``key=value,flag,...`` into (key, value-or-None) pairs; ``,,`` is a
    literal comma."""
    items: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if text[i + 1:i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    items.append("".join(cur))
    pairs: list[tuple[str, str | None]] = []
    for item in items:
        key, eq, value = item.partition("=")
        pairs.append((key, value if eq else None))
    return pairs


def _parse(option: str, text: str, keys: tuple[str, ...], flags: tuple[str, ...]
           ) -> tuple[dict[str, str], list[str]]:
    values: dict[str, str] = {}
    seen_flags: list[str] = []
    for key, value in split_options(text):
        if value is None and key in flags:
            if key in seen_flags:
                raise OptionError(f"{option}: '{key}' is given twice")
            seen_flags.append(key)
        elif value is not None and key in keys:
            if key in values:
                raise OptionError(f"{option}: '{key}=' is given twice")
            if not value:
                raise OptionError(f"{option}: '{key}=' needs a value")
            values[key] = value
        else:
            valid = ", ".join([f"{k}=" for k in keys] + list(flags))
            what = f"'{key}'" if key else "an empty item"
            if value is None and key in keys:
                raise OptionError(f"{option}: '{key}' needs a value ('{key}=...')")
            if value is not None and key in flags:
                raise OptionError(f"{option}: '{key}' takes no value")
            raise OptionError(f"{option}: unknown parameter {what} in {text!r}; valid: {valid}")
    return values, seen_flags


def parse_drive(text: str) -> DriveOption:
    """Parse the value of ``--drive id=ID,file=PATH[,format=raw|qcow2]``."""
    values, _ = _parse("--drive", text, ("id", "file", "format"), ())
    for key in ("id", "file"):
        if key not in values:
            raise OptionError(f"--drive {text!r}: '{key}=' is missing "
                              f"(expected id=ID,file=PATH[,format=raw|qcow2])")
    fmt = values.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise OptionError(f"--drive {text!r}: format={fmt} is not supported; use "
                          f"{' or '.join(FORMATS)} (or leave it out to probe)")
    return DriveOption(id=values["id"], file=values["file"], format=fmt)


def parse_blobstore(text: str) -> BlobstoreOption:
    """Parse the value of ``--blobstore name=NAME,drive=ID[,ACTION]`` (ACTION: one of
    showsize, create, format, formatifbad)."""
    values, flags = _parse("--blobstore", text, ("name", "drive"), ACTIONS)
    for key in ("name", "drive"):
        if key not in values:
            raise OptionError(f"--blobstore {text!r}: '{key}=' is missing (expected "
                              f"name=NAME,drive=ID[,{'|'.join(ACTIONS)}])")
    if len(flags) > 1:
        raise OptionError(f"--blobstore {text!r}: give at most one of {', '.join(ACTIONS)} "
                          f"(got {', '.join(flags)})")
    try:
        Registration(values["name"], "x", 0)   # the name becomes the store's label
    except RegistrationError as e:
        raise OptionError(f"--blobstore {text!r}: name: {e}") from None
    return BlobstoreOption(name=values["name"], drive=values["drive"],
                           action=flags[0] if flags else None)


def parse_drives(texts: Iterable[str]) -> dict[str, DriveOption]:
    """Parse every ``--drive``, keyed by id; the same id twice is an error."""
    drives: dict[str, DriveOption] = {}
    for text in texts:
        d = parse_drive(text)
        if d.id in drives:
            raise OptionError(f"--drive: id={d.id} is defined twice")
        drives[d.id] = d
    return drives


def showsize_sentence(name: str, drive: str, size: int) -> str:
    """The seed's sentence. ``size`` is a whole number of KiB (every required size is), so an
    image of exactly N KiB works and one byte less does not."""
    assert size % SIZE_GRANULARITY == 0
    return f"Blobstore {name} on drive with ID {drive} requires {size // 1024}kb."


def format_for_new_file(path: str) -> str:
    """The format ``create`` uses for a new file when ``--drive`` gives none: qcow2 for names
    ending in .qcow2 or .qcow, raw otherwise."""
    return "qcow2" if path.lower().endswith((".qcow2", ".qcow")) else "raw"


def open_blobstore(option: BlobstoreOption, drives: dict[str, DriveOption],
                   registrations: Iterable[Registration], *, out: TextIO | None = None,
                   producer: str = PRODUCER, clock: Callable[[], int] = time.time_ns
                   ) -> BlobStore | None:
    """Carry out ``--blobstore``: returns the open store (which owns the image), or None after
    printing the showsize sentence to ``out`` (stdout by default; the caller then exits 0).
    Raises SetupError (or OptionError for a drive id no ``--drive`` defines)."""
    regs = tuple(registrations)
    try:
        drive = drives[option.drive]
    except KeyError:
        known = ", ".join(sorted(drives)) or "none"
        raise OptionError(f"--blobstore name={option.name}: no --drive has id={option.drive} "
                          f"(defined: {known})") from None
    need = required_size(regs)
    if option.action == "showsize":
        print(showsize_sentence(option.name, drive.id, need), file=out or sys.stdout)
        return None
    where = f"blobstore {option.name} on drive {drive.id} ({drive.file})"
    image = _open_drive(option, drive, need, where)
    try:
        return _open_store(option, image, regs, need, where, producer, clock)
    except BaseException:
        image.close()
        raise


def _open_drive(option: BlobstoreOption, drive: DriveOption, need: int, where: str) -> Image:
    path = drive.file
    missing = not os.path.lexists(path)
    empty = not missing and os.path.isfile(path) and os.path.getsize(path) == 0
    try:
        if missing or empty:
            if option.action != "create":
                state = "does not exist" if missing else "is empty"
                raise SetupError(f"{where}: the file {state}; add ',create' to --blobstore "
                                 f"to create it ({need} bytes)")
            fmt = drive.format or format_for_new_file(path)
            create_image(path, fmt, need)
            return open_image(path, fmt)
        return open_image(path, drive.format)
    except ImageError as e:
        raise SetupError(f"{where}: {e}") from e


def _open_store(option: BlobstoreOption, image: Image, regs: tuple[Registration, ...],
                need: int, where: str, producer: str, clock: Callable[[], int]) -> BlobStore:
    action = option.action

    def fresh() -> BlobStore:
        if image.size() < need:
            if action == "create":
                _grow(image, need, where)
            else:
                raise SetupError(f"{where}: {ImageTooSmallError(need, image.size())} "
                                 f"({_resize_hint(image, need)})")
        return BlobStore.format(image, regs, label=option.name, producer=producer, clock=clock)

    try:
        if action == "format":
            return fresh()
        try:
            return BlobStore.open(image, regs, label=option.name, producer=producer,
                                  clock=clock)
        except NotFormattedError as e:
            if action in ("create", "formatifbad"):
                return fresh()
            if image.size() < need:
                raise SetupError(f"{where}: {e}, and too small: the store needs {need} bytes "
                                 f"but the image has {image.size()} bytes; add ',create' to "
                                 f"--blobstore to grow and format it") from e
            raise SetupError(f"{where}: {e}; add ',create' or ',formatifbad' to --blobstore "
                             f"to format it") from e
        except DamagedError as e:
            if action == "formatifbad":
                return fresh()
            raise SetupError(f"{where}: {e}; inspect it with `blobstore check {image.path}`, "
                             f"or add ',formatifbad' to --blobstore to format it (losing its "
                             f"content)") from e
        except ImageTooSmallError as e:
            if action != "create":
                raise SetupError(f"{where}: {e} (add ',create' to --blobstore to grow it, or "
                                 f"{_resize_hint(image, e.required)})") from e
            _grow(image, e.required, where)
            return BlobStore.open(image, regs, label=option.name, producer=producer,
                                  clock=clock)
        except IncompatibleError as e:
            raise SetupError(f"{where}: {e}; it is left untouched (use a newer version of "
                             f"this program, or ',format' to start over)") from e
        except RegistrationError as e:
            raise SetupError(f"{where}: {e}") from e
    except SetupError:
        raise
    except (StoreError, ImageError) as e:
        raise SetupError(f"{where}: {e}") from e


def _grow(image: Image, size: int, where: str) -> None:
    try:
        image.resize(size)
    except ImageError as e:
        raise SetupError(f"{where}: the image must grow from {image.size()} to {size} bytes "
                         f"but cannot: {e}") from e


def _resize_hint(image: Image, size: int) -> str:
    return f"`qemu-img resize -f {image.format_name} {image.path} {size}`"
