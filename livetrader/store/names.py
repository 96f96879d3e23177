"""File names of a pair's (and a risk profile's) files: one name per key, never two keys per name.

A pair's stem is ``<symbol>_<strategy>_<exchange>`` with each part encoded: the characters
``A-Z a-z 0-9 . -`` stay as they are, every other character (``_`` and ``%`` included) becomes
``%XX`` per UTF-8 byte, like a URL, and a part's leading ``.`` becomes ``%2E`` (no hidden files,
no ``..``). An encoded part never holds ``_``, so the stem splits back into its three parts and
two keys never share a stem: ``("A_B", "x", "sim")`` is ``A%5FB_x_sim`` and ``("A", "B_x", "sim")``
is ``A_B%5Fx_sim``; ``BTC/USDT`` is ``BTC%2FUSDT``. The common case reads as it always did:
``BTCUSDT_my-strategy_sim``.

A stem longer than ``MAX_STEM_BYTES`` is cut and ends in ``~`` and 32 hex digits of the SHA-256
of the whole encoded stem (``~`` is always encoded inside a part, so only such a stem holds one):
names stay unique and, with the longest suffix the store adds, within the 255 bytes a file
system allows.

``legacy_pair_stem`` is the earlier scheme (each unsafe character replaced by ``-``, parts
joined by ``_``), which could give two pairs one name; the store renames files found under it.
"""

from __future__ import annotations

import hashlib
import re

#: The longest stem: leaves room for ``.jsonl``, ``.json.tmp``, a report's ``_<stamp>.md`` and a
#: quarantined copy's ``<stamp>-N_`` prefix and ``.why.txt`` note, all within 255 bytes.
MAX_STEM_BYTES = 200
_HASH_HEX = 32
_SAFE = re.compile(r"[A-Za-z0-9-][A-Za-z0-9.-]*")
_SAFE_STEM = re.compile(r"[A-Za-z0-9-][A-Za-z0-9.-]*(?:_[A-Za-z0-9-][A-Za-z0-9.-]*)*")
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")
_LEGACY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def encode_part(part: str) -> str:
    """One part of a file name, reversibly: ``BTC/USDT`` -> ``BTC%2FUSDT``, ``a_b`` -> ``a%5Fb``.

    The result holds only ``A-Z a-z 0-9 . - %``, never starts with ``.``, and differs for
    different inputs. Raises ``ValueError`` for an empty part.
    """
    if not part:
        raise ValueError("a file name part must not be empty")
    if _SAFE.fullmatch(part):
        return part  # the common case, without a loop
    # surrogatepass: even a lone surrogate has bytes, so every str has exactly one encoding.
    raw = part.encode("utf-8", "surrogatepass")
    out = [chr(b) if b in _SAFE_BYTES else f"%{b:02X}" for b in raw]
    if out[0] == ".":
        out[0] = "%2E"
    return "".join(out)


def stem_of(*parts: str) -> str:
    """The encoded parts joined by ``_``, cut with a hash suffix beyond ``MAX_STEM_BYTES``."""
    stem = "_".join(parts)
    # The common case in one match: every part already safe (and so no "_" inside a part).
    if not (_SAFE_STEM.fullmatch(stem) and stem.count("_") == len(parts) - 1):
        stem = "_".join(encode_part(part) for part in parts)
    if len(stem) <= MAX_STEM_BYTES:  # ASCII only: characters are bytes
        return stem
    digest = hashlib.sha256(stem.encode("ascii")).hexdigest()[:_HASH_HEX]
    return f"{stem[: MAX_STEM_BYTES - _HASH_HEX - 1]}~{digest}"


def pair_stem(key: tuple[str, str, str]) -> str:
    """``<symbol>_<strategy>_<exchange>``, each part encoded (``encode_part``): unique per pair."""
    return stem_of(*key)


def parts_of(stem: str) -> tuple[str, ...] | None:
    """The parts ``stem_of`` encoded into ``stem`` (its inverse); None for a stem cut with a hash."""
    if "~" in stem:
        return None
    return tuple(bytes.fromhex("".join(_hex_or_byte(piece) for piece in _PIECES.findall(part))).decode(
        "utf-8", "surrogatepass") for part in stem.split("_"))


_PIECES = re.compile(r"%[0-9A-F]{2}|[^%]")


def _hex_or_byte(piece: str) -> str:
    return piece[1:] if piece[0] == "%" else f"{ord(piece):02X}"


def legacy_part(name: str) -> str:
    """A part as file names had it before the encoding (``BTC/USDT`` -> ``BTC-USDT``): lossy."""
    if not name:
        raise ValueError("a file name part must not be empty")
    return _LEGACY_UNSAFE.sub("-", name)


def legacy_pair_stem(key: tuple[str, str, str]) -> str:
    """The stem a pair's files had before the encoding; two pairs may share it."""
    return "_".join(legacy_part(part) for part in key)
