"""A strategy's own state (``checkpoint``/``restore``), kept beside its pair's snapshot.

    state/strategies/<pair stem>.json   {"symbol", "strategy", "exchange", "state": {...}}

Only pairs whose strategy defines ``checkpoint`` have such a file. It is written like the
snapshot: atomically (temp file, ``fdatasync``, rename), by the same background writer and in
the same batches, and only when the state changed. It is not a journal: a crash loses what
changed since the last write (the writer runs within a second or so of each tick, so at most
the last minute's change). A file that cannot be read, or names another pair, is quarantined
like any damaged file; the strategy then starts without ``restore`` being called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livetrader.errors import StoreReadError
from livetrader.store.atomic import as_path, read_json
from livetrader.store.layout import Key
from livetrader.store.names import pair_stem
from livetrader.store.quarantine import quarantine

CHECKPOINTS_DIR = Path("state") / "strategies"


def checkpoint_path(data_dir: Path, key: Key) -> Path:
    """Where the strategy state of pair ``key`` lives."""
    return as_path(data_dir) / CHECKPOINTS_DIR / f"{pair_stem(key)}.json"


def checkpoint_document(key: Key, state: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint file holds: the pair it belongs to and the strategy's state."""
    return {"symbol": key[0], "strategy": key[1], "exchange": key[2], "state": state}


def read_checkpoint(data_dir: Path, key: Key, *, repair: bool = True) -> tuple[dict[str, Any] | None, str | None]:
    """The strategy state saved for pair ``key`` (None when there is none), and a note when the
    file was damaged: then it is quarantined (with ``repair``) and None is returned."""
    path = checkpoint_path(data_dir, key)
    try:
        data = read_json(path)
    except FileNotFoundError:
        return None, None
    except StoreReadError as exc:
        return None, _set_aside(data_dir, path, f"unreadable strategy state: {exc.reason}", repair)
    problem = _problem(data, key)
    if problem is not None:
        return None, _set_aside(data_dir, path, f"invalid strategy state: {problem}", repair)
    assert isinstance(data, dict)  # _problem refuses anything else
    state: dict[str, Any] = data["state"]
    return state, None


def _problem(data: object, key: Key) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    if (data.get("symbol"), data.get("strategy"), data.get("exchange")) != key:
        return "it belongs to another pair"
    if not isinstance(data.get("state"), dict):
        return "its state is not a JSON object"
    return None


def _set_aside(data_dir: Path, path: Path, reason: str, repair: bool) -> str:
    if not repair:
        return f"{reason}; would be quarantined (restore would not be called)"
    moved = quarantine(as_path(data_dir), path, reason)
    return f"{reason}; moved to {moved} (nothing deleted); the strategy starts without restore being called"
