"""Parsed copies of large candle files (``market.parsed``): the second load of the same bytes skips
the parsing, and gives exactly what the parse gives; any other bytes, a damaged copy or a file with
a problem are parsed (and refused) as if no copy existed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from livetrader.core.price import MINUTE_MS
from livetrader.errors import CandleSourceError
from livetrader.market import files, parsed
from livetrader.market.files import FileSource
from livetrader.market.sim import SimSource

T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
ROOT = Path(__file__).resolve().parent.parent


def rows(n: int, seed: int = 3) -> list[list[float]]:
    return [list(c) for c in SimSource(seed=seed).fetch_sync("BTCUSDT", T0, T0 + n * MINUTE_MS)]


def write_json(path: Path, data: list[list[float]]) -> Path:
    path.write_bytes(orjson.dumps(data))
    return path


def write_csv(path: Path, data: list[list[float]]) -> Path:
    path.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"{r[0]},{r[1]!r},{r[2]!r},{r[3]!r},{r[4]!r},{r[5]!r}\n" for r in data))
    return path


def state(src: FileSource) -> tuple[object, ...]:
    return (src.format, src.rows, src.gaps, src.filled_minutes, list(src.times), src.candles, repr(src.candles))


@pytest.fixture
def small_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies for files of any size, so the tests need no 5 MB files."""
    monkeypatch.setattr(files, "_COPY_FROM_BYTES", 1)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_the_second_load_is_the_copy_and_equals_the_parse(tmp_path: Path, small_copies: None, fmt: str) -> None:
    data = rows(3000)
    path = (write_json if fmt == "json" else write_csv)(tmp_path / f"c.{fmt}", data)
    folder = tmp_path / "copies"
    reference = FileSource(path)  # no copies at all
    first = FileSource(path, parsed_copies=folder)
    assert not first.from_copy and len(list(folder.glob("*.candles"))) == 1
    second = FileSource(path, parsed_copies=folder)
    assert second.from_copy
    assert state(second) == state(first) == state(reference)
    assert [tuple(map(type, c)) for c in second.candles] == [tuple(map(type, c)) for c in reference.candles]
    assert second.bounds("BTCUSDT") == reference.bounds("BTCUSDT")


def test_a_file_with_gaps_keeps_its_fill_and_strict_still_refuses_it(tmp_path: Path, small_copies: None) -> None:
    data = rows(3000)
    del data[100:103], data[2000]
    path = write_json(tmp_path / "gaps.json", data)
    folder = tmp_path / "copies"
    reference = FileSource(path)
    FileSource(path, parsed_copies=folder)
    again = FileSource(path, parsed_copies=folder)
    assert again.from_copy and state(again) == state(reference) and (again.gaps, again.filled_minutes) == (2, 4)
    with pytest.raises(CandleSourceError) as without:
        FileSource(path, strict=True)
    with pytest.raises(CandleSourceError) as with_copy:
        FileSource(path, strict=True, parsed_copies=folder)
    assert str(with_copy.value) == str(without.value)


def test_an_edit_that_keeps_size_and_time_is_parsed_again(tmp_path: Path, small_copies: None) -> None:
    """Size and modification time kept; the change time moves (the kernel's), so the file has a new
    identity and finds no hint. The case where an identity leads to the wrong copy: the next test."""
    data = rows(3000)
    path = write_csv(tmp_path / "c.csv", data)
    folder = tmp_path / "copies"
    FileSource(path, parsed_copies=folder)
    stat = path.stat()
    text = path.read_text()
    # One digit of one volume, same length, same modification time.
    line = text.splitlines()[1500]
    edited = line[:-1] + ("1" if line[-1] != "1" else "2")
    path.write_text(text.replace(line, edited))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    after = FileSource(path, parsed_copies=folder)
    assert not after.from_copy
    assert state(after) == state(FileSource(path)) and after.candles[1499].volume != data[1499][5]


def test_a_damaged_copy_is_never_used(tmp_path: Path, small_copies: None) -> None:
    path = write_json(tmp_path / "c.json", rows(3000))
    folder = tmp_path / "copies"
    FileSource(path, parsed_copies=folder)
    (copy,) = folder.glob("*.candles")
    # Cut short, a header field changed, one bit of the last volume flipped (same length), a stub.
    for damage in (lambda b: b[:-8], lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],
                   lambda b: b[:-1] + bytes([b[-1] ^ 1]), lambda b: b[:20]):
        copy.write_bytes(damage(copy.read_bytes()))
        assert parsed.read(folder, copy.name.removesuffix(".candles")) is None and not copy.exists()
        src = FileSource(path, parsed_copies=folder)  # parsed again, and a whole copy kept
        assert not src.from_copy and state(src) == state(FileSource(path))
        assert FileSource(path, parsed_copies=folder).from_copy


def test_a_file_with_a_problem_gets_no_copy_and_the_same_error(tmp_path: Path, small_copies: None) -> None:
    data = rows(3000)
    data[2500][3] = data[2500][2] * 2  # low above high
    path = write_json(tmp_path / "bad.json", data)
    folder = tmp_path / "copies"
    with pytest.raises(CandleSourceError) as without:
        FileSource(path)
    for _ in range(2):
        with pytest.raises(CandleSourceError) as with_copies:
            FileSource(path, parsed_copies=folder)
        assert str(with_copies.value) == str(without.value) and "row index 2500" in str(without.value)
    assert not folder.exists() or not list(folder.iterdir())


def test_only_the_most_recently_used_copies_are_kept(tmp_path: Path, small_copies: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsed, "KEEP", 2)
    folder = tmp_path / "copies"
    paths = [write_json(tmp_path / f"{seed}.json", rows(500, seed)) for seed in (1, 2, 3)]
    copies = [folder / f"{parsed.key_of_file(p)}.candles" for p in paths]
    FileSource(paths[0], parsed_copies=folder)
    FileSource(paths[1], parsed_copies=folder)
    os.utime(copies[0], ns=(1, 1))  # the first is the older ...
    os.utime(copies[1], ns=(2, 2))
    assert FileSource(paths[0], parsed_copies=folder).from_copy  # ... until it is used again
    FileSource(paths[2], parsed_copies=folder)
    assert sorted(folder.glob("*.candles")) == sorted([copies[0], copies[2]])  # the least recently used went
    assert len(list(folder.glob("*.hint"))) == 2  # and the hint that led to it
    assert not FileSource(paths[1], parsed_copies=folder).from_copy


def test_a_copy_is_used_only_for_the_bytes_it_was_parsed_from(tmp_path: Path, small_copies: None) -> None:
    """The identity (path, inode, size, times) only says where to look: the bytes decide."""
    folder = tmp_path / "copies"
    a, b = (write_json(tmp_path / f"{seed}.json", rows(500, seed)) for seed in (1, 2))
    FileSource(a, parsed_copies=folder)
    FileSource(b, parsed_copies=folder)
    hint_a = folder / f"{parsed.identity_of(a)}.hint"
    hint_a.unlink()
    hint_a.symlink_to(os.readlink(folder / f"{parsed.identity_of(b)}.hint"))  # a's identity -> b's copy
    src = FileSource(a, parsed_copies=folder)
    assert not src.from_copy and state(src) == state(FileSource(a))
    assert FileSource(a, parsed_copies=folder).from_copy and FileSource(b, parsed_copies=folder).from_copy


def test_an_unwritable_folder_loads_the_file_all_the_same(tmp_path: Path, small_copies: None) -> None:
    path = write_json(tmp_path / "c.json", rows(500))
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    src = FileSource(path, parsed_copies=blocked / "copies")
    assert state(src) == state(FileSource(path)) and not src.from_copy


@pytest.mark.e2e
def test_backtest_twice_from_a_large_file_gives_the_same_trades(tmp_path: Path) -> None:
    """The real command over a file above the size for copies: the second run says its candles
    came from the parsed copy, and every trade and statistic is the first run's."""
    data_dir = tmp_path / "data"
    config = tmp_path / "livetrader.toml"
    config.write_text(f'[livetrader]\ndata_dir = "{data_dir}"\n')
    path = write_json(tmp_path / "big.json", rows(60_000))
    assert path.stat().st_size >= files._COPY_FROM_BYTES
    argv = [sys.executable, "-m", "livetrader.cli.app", "backtest", "BTCUSDT", "--strategy", "my-strategy",
            "--candles", str(path), "--json", "--config", str(config),
            "--strategies-dir", str(ROOT / "strategies")]
    runs = [subprocess.run(argv, capture_output=True, text=True, timeout=120) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert "parsed copy" not in runs[0].stderr
    assert f"from the parsed copy in {data_dir / 'cache' / 'candle-files'}" in runs[1].stderr
    first, second = (json.loads(run.stdout) for run in runs)
    assert first["trades"] and first["trades"] == second["trades"] and first["stats"] == second["stats"]
    assert first["summary"]["candles"] == second["summary"]["candles"] == 60_000


def test_leftovers_are_tidied(tmp_path: Path, small_copies: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer killed mid-write leaves a ``.part`` (removed once an hour old); a file given new
    identities (copied, touched) leaves hints (the newest ``HINTS`` kept)."""
    monkeypatch.setattr(parsed, "HINTS", 2)
    folder = tmp_path / "copies"
    folder.mkdir()
    old_part, new_part = folder / "x.candles.1.part", folder / "y.candles.2.part"
    for part in (old_part, new_part):
        part.write_bytes(b"torn")
    os.utime(old_part, (1, 1))
    path = write_json(tmp_path / "c.json", rows(500))
    for n in range(4):  # the same bytes under four identities (each load after the touch parses again)
        os.utime(path, ns=(n * 10**9, n * 10**9))
        FileSource(path, parsed_copies=folder)
    assert not old_part.exists() and new_part.exists()
    assert len(list(folder.glob("*.candles"))) == 1 and len(list(folder.glob("*.hint"))) == 2
    assert FileSource(path, parsed_copies=folder).from_copy  # the newest identity's hint is kept
