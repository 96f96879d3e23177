"""Parsed copies of large candle files: the second load of the same file skips the parsing.

A year of 1-minute candles in JSON or CSV takes 0.8-1.2 s to parse and check, however fast the
parser: ``orjson`` alone needs 0.35 s to turn the text into numbers. Its checked candles, kept
as raw float64 columns (the candle store's own layout, ``market.store``), load in a quarter of
that. So after a large file loads (``FileSource``: 5 MB, ~100,000 rows, and more), its candles are written under
``<data_dir>/cache/candle-files/``, named by a SHA-256 of the file's bytes and of the loader's
own source. A copy is used only for a file whose bytes are exactly those parsed (any edit, even
one that keeps its size and time, is another name), by the same loader (a livetrader whose
checks changed does not find the old copies), and only when it is whole (its CRC-32 matches).
Only files that loaded without an error are copied, so a file with a problem is read and
refused by the loader every time, with its message.

The copies are a cache: deleting the folder loses nothing. At most ``KEEP`` are kept, the least
recently used going first; one that cannot be written (a read-only data directory, a full disk)
is skipped in silence, as the load itself succeeded.
"""

from __future__ import annotations

import array
import hashlib
import os
import struct
import sys
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from itertools import repeat
from operator import itemgetter
from pathlib import Path

from livetrader.core.price import MINUTE_MS, Candle

#: Copies kept (a year of candles is 21 MB).
KEEP = 8
#: Hints kept (the newest; one per identity a file has had).
HINTS = 4 * KEEP
_SUFFIX = ".candles"
_HINT = ".hint"
_MAGIC = b"LTPC"
#: magic, first candle's opening (ms), candles, rows read from the file, gaps, minutes filled, the
#: file's format (``json``, ``csv``); then the CRC-32 of those fields and the body (the five columns).
_FIELDS = struct.Struct("<4sqqqqq4s")
_CRC = struct.Struct("<I")
_HEADER_SIZE = _FIELDS.size + _CRC.size


def folder_of(data_dir: Path) -> Path:
    """Where the parsed copies live in a data directory."""
    return Path(data_dir) / "cache" / "candle-files"


@dataclass(slots=True)
class Parsed:
    """A candle file's checked candles, as ``FileSource`` keeps them."""

    candles: list[Candle]
    times: range
    rows: int
    gaps: int
    filled_minutes: int
    #: ``json`` or ``csv``, as the loader read the file.
    format: str


@cache
def _loader_digest() -> bytes | None:
    """What makes a copy stale besides the file: the code that parsed and checked it. None when
    that code cannot be read (an install without sources): then no copy is made or used."""
    digest = hashlib.sha256()
    try:
        for module in ("files.py", "parsed.py"):
            digest.update((Path(__file__).parent / module).read_bytes())
    except OSError:
        return None
    return digest.digest()


def key_of(data: bytes) -> str | None:
    """The copy's name for a file holding ``data`` (with SHA-NI, ~35 ms for a year of candles)."""
    loader = _loader_digest()
    if loader is None:
        return None
    digest = hashlib.sha256(loader)
    digest.update(data)
    return digest.hexdigest()


def key_of_file(path: Path) -> str | None:
    """``key_of`` the bytes of the file at ``path``; None when it cannot be read (the loader then
    says why). One read of the whole file and one hash call, each releasing the GIL throughout,
    so this runs beside the building of candles in ``load`` (hashing piece by piece, the thread
    waited for the GIL at every piece: 0.03-0.05 s slower). Not through a memory map: a file cut
    short while mapped kills the process (SIGBUS), where a read just sees fewer bytes."""
    try:
        with path.open("rb", buffering=0) as f:
            return key_of(f.read())
    except OSError:
        return None


def identity_of(path: Path) -> str | None:
    """What names a file without reading it: its absolute path, device, inode, size and times.
    Only a hint: a copy found by it is used once the file's bytes hash to the copy's name."""
    try:
        st = path.stat()
    except OSError:
        return None
    text = f"{path.resolve()}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()


def load(path: Path, folder: Path) -> Parsed | None:
    """The parsed copy of the file at ``path`` when ``folder`` holds one for exactly its bytes, else None.

    The copy is looked up by the file's identity (``identity_of``, a symlink ``<identity>.hint``
    to the copy) and built into candles while another thread hashes the file's bytes; it is kept
    only when that hash is the copy's name. So the hash costs no time beside the building (a year:
    ~45 ms saved on two cores), and a copy is never used for other bytes, whatever the identity says.
    """
    identity = identity_of(path)
    if identity is None:
        return None
    try:
        named = os.readlink(folder / (identity + _HINT))
    except OSError:
        return None
    key = Path(named).name.removesuffix(_SUFFIX)
    if _loader_digest() is None:
        return None
    with ThreadPoolExecutor(max_workers=1) as hashing:
        hashed = hashing.submit(key_of_file, path)
        copy = read(folder, key)
        if copy is None or hashed.result() != key:
            return None
    return copy


def read(folder: Path, key: str) -> Parsed | None:
    """The copy named ``key``, or None when there is none or it is not whole (it is then removed)."""
    path = folder / (key + _SUFFIX)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < _HEADER_SIZE:
        _discard(path)
        return None
    fields = memoryview(data)[:_FIELDS.size]
    (crc,) = _CRC.unpack_from(data, _FIELDS.size)
    body = memoryview(data)[_HEADER_SIZE:]
    magic, first, count, rows, gaps, filled, fmt = _FIELDS.unpack(fields)
    if magic != _MAGIC or len(body) != 5 * 8 * count or zlib.crc32(body, zlib.crc32(fields)) != crc:
        _discard(path)
        return None
    columns = []
    for k in range(5):
        column = array.array("d")
        column.frombytes(body[k * 8 * count:(k + 1) * 8 * count])
        if sys.byteorder == "big":
            column.byteswap()
        columns.append(column)
    times = range(first, first + count * MINUTE_MS, MINUTE_MS)
    new = tuple.__new__  # as the loaders build their Candle tuples
    candles = list(map(new, repeat(Candle), zip(times, *columns, strict=True)))
    try:
        os.utime(path)  # recently used: the last to go
    except OSError:
        pass
    return Parsed(candles, times, rows, gaps, filled, fmt.rstrip(b"\0").decode())


def write(folder: Path, key: str | None, parsed: Parsed, columns: Sequence[Sequence[object]] | None = None,
          identity: str | None = None) -> None:
    """Keep a copy of ``parsed`` named ``key``, then drop the oldest beyond ``KEEP``. Any OS error
    leaves things as they were: a copy is only ever an optimisation. Not synced to the disk (a
    cache): a copy torn by a power cut fails its CRC and is parsed again.

    ``columns``: the loader's own (times, open, high, low, close, volume) lists when the candles
    are exactly those: faster than taking the candles apart again. ``identity``: the file's
    (``identity_of``, taken before it was read), for ``load`` to find the copy by."""
    if key is None:
        return  # the loader's code cannot be read: no copy
    values = columns[1:] if columns is not None else [list(map(itemgetter(k), parsed.candles)) for k in range(1, 6)]
    arrays = [array.array("d", column) for column in values]
    if sys.byteorder == "big":
        for column in arrays:
            column.byteswap()
    body = b"".join(column.tobytes() for column in arrays)
    fields = _FIELDS.pack(_MAGIC, parsed.times[0], len(parsed.candles), parsed.rows, parsed.gaps,
                          parsed.filled_minutes, parsed.format.encode())
    path = folder / (key + _SUFFIX)
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        part.write_bytes(fields + _CRC.pack(zlib.crc32(body, zlib.crc32(fields))) + body)
        os.replace(part, path)
        if identity is not None:
            hint = folder / (identity + _HINT)
            link = hint.with_name(f"{hint.name}.{os.getpid()}.part")
            link.unlink(missing_ok=True)
            os.symlink(path.name, link)
            os.replace(link, hint)
        _tidy(folder)
    except OSError:
        _discard(part)


def _tidy(folder: Path) -> None:
    """Drop the copies beyond ``KEEP`` (least recently used first), hints to no copy or beyond
    ``HINTS`` (a file copied, touched or downloaded again gets a new identity each time), and
    ``.part`` files an hour old (a writer killed mid-write)."""
    copies = sorted(folder.glob("*" + _SUFFIX), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for stale in copies[KEEP:]:
        stale.unlink(missing_ok=True)
    hints = sorted(folder.glob("*" + _HINT), key=lambda p: p.lstat().st_mtime_ns, reverse=True)
    for number, hint in enumerate(hints):
        if number >= HINTS or not hint.exists():  # exists() follows the link: False when its copy is gone
            hint.unlink(missing_ok=True)
    hour_ago = time.time() - 3600
    for part in folder.glob("*.part"):
        if part.lstat().st_mtime < hour_ago:
            part.unlink(missing_ok=True)


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
