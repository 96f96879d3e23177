"""File names unique per pair (issue 15 item 9), and data directories named the earlier way still working."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import orjson
import pytest
from daemon import DATA, events, run, start, stop, wait_for, wait_running, workdir
from hypothesis import given, settings
from hypothesis import strategies as st

from livetrader.core.signal import SignalRow, TickResult, record_of
from livetrader.store.commit import commit_log_path, replay_commit_log
from livetrader.store.journal import read_journal
from livetrader.store.layout import pair_paths, risk_path
from livetrader.store.state import load_risk, pair_stem, restore_pair, snapshot_dict

T0 = 1_704_067_200_000
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def old_stem(symbol: str, strategy: str, exchange: str) -> str:
    """The file stem of a pair before the encoding, written out: unsafe characters -> ``-``, joined by ``_``."""
    return "_".join(_UNSAFE.sub("-", part) for part in (symbol, strategy, exchange))


def opened(key: tuple[str, str, str], at: int = T0) -> dict:
    symbol, strategy, exchange = key
    row = SignalRow(f"{symbol}-{strategy}-{at}", symbol, strategy, exchange, "long", 100.0, 102.0, 99.0, 60, at, at)
    return record_of(TickResult("opened", symbol, strategy, exchange, at, 100.0, row))


def write_old_pair(data: Path, key: tuple[str, str, str], records: list[dict]) -> tuple[Path, Path]:
    """A pair's journal and snapshot under the earlier file names, as an older livetrader left them."""
    stem = old_stem(*key)
    journal = data / "journal" / f"{stem}.jsonl"
    snap = data / "state" / "pairs" / f"{stem}.json"
    journal.parent.mkdir(parents=True, exist_ok=True)
    snap.parent.mkdir(parents=True, exist_ok=True)
    journal.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    state = snapshot_dict(key, None, None, None)
    snap.write_bytes(orjson.dumps({**state, "risk": None, "journal_records": len(records)}))
    return journal, snap


# --- the encoding -----------------------------------------------------------------------------

def test_pairs_that_shared_a_name_get_their_own() -> None:
    assert pair_stem(("A_B", "x", "sim")) != pair_stem(("A", "B_x", "sim"))
    assert pair_stem(("BTC/USDT", "s", "binance")) != pair_stem(("BTC-USDT", "s", "binance"))
    assert pair_stem(("a_b", "c", "d")) != pair_stem(("a%5Fb", "c", "d"))
    # The common case reads as before.
    assert pair_stem(("BTCUSDT", "my-strategy", "sim")) == "BTCUSDT_my-strategy_sim"
    assert pair_stem(("BTC/USDT", "ma_cross", "binance")) == "BTC%2FUSDT_ma%5Fcross_binance"
    assert pair_stem((".hidden", "..", "x")) == "%2Ehidden_%2E._x"
    assert risk_path(Path("d"), "a_b") != risk_path(Path("d"), "a-b")


# Characters that collide or break things: the separator, the escape, path characters, dots, the
# hash marker, non-ASCII, a lone surrogate; mixed with anything.
_TRICKY = st.sampled_from(["_", "%", "5", "F", "/", ".", "-", "~", "A", "x", " ", "\x00", "é", "€", "\udc80", "%5F"])
_PART = st.lists(_TRICKY | st.characters(), min_size=1, max_size=12).map("".join)
_LONG_PART = st.text(alphabet=st.sampled_from("ab_/%é"), min_size=1, max_size=400)
_KEY = st.tuples(_PART | _LONG_PART, _PART, _PART | _LONG_PART)


def _valid_file_stem(stem: str) -> None:
    assert "/" not in stem and "\x00" not in stem
    assert not stem.startswith(".")
    assert len(stem.encode()) <= 200
    # With the longest suffix the store adds (a quarantined journal's stamp, suffix and note): <= 255 bytes.
    assert len(f"20240101T000000Z-99_{stem}.jsonl.why.txt".encode()) <= 255


@settings(max_examples=400, deadline=None)
@given(_KEY, _KEY)
def test_distinct_keys_give_distinct_valid_stems(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    _valid_file_stem(pair_stem(a))
    _valid_file_stem(pair_stem(b))
    assert (pair_stem(a) == pair_stem(b)) == (a == b)


@settings(max_examples=300, deadline=None)
@given(_KEY)
def test_a_stem_decodes_back_to_its_pair(key: tuple[str, str, str]) -> None:
    from livetrader.store.names import parts_of

    stem = pair_stem(key)
    assert parts_of(stem) == (None if "~" in stem else key)  # "~" only in a stem cut with a hash


def test_colliding_old_names_found_by_the_property() -> None:
    # Under the earlier scheme these gave one stem; the property above would have caught it.
    assert old_stem("A_B", "x", "sim") == old_stem("A", "B_x", "sim")
    assert pair_stem(("A_B", "x", "sim")) == "A%5FB_x_sim" and pair_stem(("A", "B_x", "sim")) == "A_B%5Fx_sim"


# --- files under the earlier names ------------------------------------------------------------

def test_restore_renames_a_pairs_old_files_and_a_dry_run_only_says_so(tmp_path: Path) -> None:
    key = ("BTC/USDT", "ma_cross", "binance")
    old_journal, old_snapshot = write_old_pair(tmp_path, key, [opened(key)])
    journal, snapshot = pair_paths(tmp_path, key)

    dry = restore_pair(tmp_path, key, repair=False)
    assert dry.row is not None and len(dry.records) == 1 and dry.snapshot_records == 1
    assert [n for n in dry.notes if n.startswith("would rename")] == [
        f"would rename {old_journal.name} to {journal.name} (file names now encode each pair uniquely)",
        f"would rename {old_snapshot.name} to {snapshot.name} (file names now encode each pair uniquely)",
    ]
    assert old_journal.exists() and old_snapshot.exists() and not journal.exists() and not snapshot.exists()

    done = restore_pair(tmp_path, key)
    assert done.row is not None and done.row.id == dry.row.id and done.paths == (journal, snapshot)
    assert [n.split(" to ")[0] for n in done.notes] == [f"renamed {old_journal.name}", f"renamed {old_snapshot.name}"]
    assert journal.exists() and snapshot.exists() and not old_journal.exists() and not old_snapshot.exists()
    assert not (tmp_path / "quarantine").exists()
    assert restore_pair(tmp_path, key).notes == []  # nothing left to do


def test_an_old_file_of_another_pair_is_left_to_that_pair(tmp_path: Path) -> None:
    mine, other = ("A", "B_x", "sim"), ("A_B", "x", "sim")
    old_journal, old_snapshot = write_old_pair(tmp_path, other, [opened(other)])

    fresh = restore_pair(tmp_path, mine)
    assert fresh.row is None and fresh.records == [] and fresh.notes == []
    assert old_journal.exists() and old_snapshot.exists()

    theirs = restore_pair(tmp_path, other)
    assert theirs.row is not None and not old_journal.exists() and not old_snapshot.exists()
    assert not (tmp_path / "quarantine").exists()


def test_half_done_renames_finish_and_an_empty_journal_goes_with_its_snapshot(tmp_path: Path) -> None:
    key = ("A_B", "x", "sim")
    journal, snapshot = pair_paths(tmp_path, key)
    # A crash between the journal's rename and the snapshot's.
    old_journal, old_snapshot = write_old_pair(tmp_path, key, [opened(key)])
    os.rename(old_journal, journal)
    restored = restore_pair(tmp_path, key)
    assert restored.snapshot_records == 1 and snapshot.exists() and not old_snapshot.exists()

    # A pair that never traded: an empty journal, owned by the snapshot beside it.
    idle = ("ETH/USDT", "x", "sim")
    old_journal, old_snapshot = write_old_pair(tmp_path, idle, [])
    restore_pair(tmp_path, idle)
    assert pair_paths(tmp_path, idle)[0].exists() and not old_journal.exists() and not old_snapshot.exists()


def test_commit_log_replay_puts_lines_back_into_a_journal_with_its_old_name(tmp_path: Path) -> None:
    key = ("A_B", "x", "sim")
    first, second = opened(key, T0), {**opened(key, T0 + 60_000), "event": "closed"}
    old_journal, _ = write_old_pair(tmp_path, key, [first])
    log = commit_log_path(tmp_path)
    log.write_bytes(orjson.dumps({"n": 2, "record": second}) + b"\n")

    dry = replay_commit_log(tmp_path, repair=False)
    assert not dry.problems and dry.restored == {old_journal: 1}
    assert dry.renamed[0].startswith(f"would rename {old_journal.name}")

    done = replay_commit_log(tmp_path)
    journal = pair_paths(tmp_path, key)[0]
    assert not done.problems and done.restored == {journal: 1}
    assert read_journal(journal).records == [first, second] and not old_journal.exists()
    assert restore_pair(tmp_path, key).snapshot_records == 1  # the snapshot followed


def test_a_risk_file_with_its_old_name_is_read_and_renamed(tmp_path: Path) -> None:
    old = tmp_path / "state" / "risk" / "my_profile.json"  # the earlier name kept "_"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"profile": "my_profile", "positions": [{"signal_id": "s1"}]}))
    (tmp_path / "state" / "risk" / "other-one.json").write_text(json.dumps({"profile": "other-one", "positions": []}))
    assert load_risk(tmp_path, "other/one") == []  # "other-one"'s file, under the name both once had
    assert load_risk(tmp_path, "my_profile") == [{"signal_id": "s1"}]
    assert risk_path(tmp_path, "my_profile").exists() and not old.exists()


# --- the daemon ---------------------------------------------------------------------------------

@pytest.mark.e2e
def test_pairs_that_shared_a_file_name_each_run_and_keep_their_own_files(tmp_path: Path) -> None:
    cwd = workdir(tmp_path)
    (cwd / "candles.json").write_text(json.dumps(json.loads(DATA.read_text())[:400]))
    # Four pairs, among them (A_B, x) and (A, B_x): one file name, A_B_x_files, under the earlier scheme.
    result = run(cwd, "run", "A_B", "A", "--strategy", "x", "--strategy", "B_x", "--candles", "candles.json",
                 "--data-dir", "dump",
                 "--speed", "20000", timeout=60)
    assert result.returncode == 0, result.stderr
    evs = events(result.stdout)
    assert not [e for e in evs if e.get("level") == "error"], [e for e in evs if e.get("level") == "error"]
    keys = {("A_B", "x", "files"), ("A", "B_x", "files"), ("A_B", "B_x", "files"), ("A", "x", "files")}
    assert {(e["symbol"], e["strategy"], e["exchange"]) for e in evs if e["event"] == "opened"} == keys
    data = cwd / "dump"
    assert not (data / "quarantine").exists()
    for key in keys:
        journal, snapshot = pair_paths(data, key)
        records = read_journal(journal).records
        assert records and {(r["symbol"], r["strategy"], r["exchange"]) for r in records} == {key}
        snap = json.loads(snapshot.read_text())
        assert (snap["symbol"], snap["strategy"], snap["exchange"]) == key
        assert snap["journal_records"] == len(records)
    # Both snapshots are kept: a repairing recover finds every pair whole.
    checked = run(cwd, "recover", "--json")
    report = json.loads(checked.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert {(p["symbol"], p["strategy"], p["exchange"]) for p in report["pairs"]} == keys
    assert not report["damage"] and not any(p["damage"] for p in report["pairs"])
    assert not (data / "quarantine").exists()


@pytest.mark.e2e
def test_the_daemon_restores_a_pair_from_files_with_old_names_and_renames_them(tmp_path: Path) -> None:
    cwd = workdir(tmp_path)
    key = ("BTCUSDT", "B_x", "sim")
    journal, snapshot = pair_paths(cwd / "dump", key)
    proc = start(cwd, "run", "BTCUSDT", "--strategy", "B_x", "--speed", "60", "--data-dir", "dump")
    assert wait_for(lambda: journal.exists() and b'"opened"' in journal.read_bytes(), 40)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    opened_id = [json.loads(x) for x in journal.read_text().splitlines() if '"opened"' in x][-1]["signal_id"]
    # What an older livetrader left: the same files, under the earlier names.
    old_journal = journal.with_name(old_stem(*key) + ".jsonl")
    old_snapshot = snapshot.with_name(old_stem(*key) + ".json")
    assert old_journal != journal
    os.rename(journal, old_journal)
    os.rename(snapshot, old_snapshot)

    proc = start(cwd, "run", "BTCUSDT", "--strategy", "B_x", "--speed", "60", "--data-dir", "dump")
    assert wait_for(lambda: journal.exists(), 20)
    assert wait_running(cwd / "dump", proc)
    time.sleep(1.5)
    code, out, err = stop(proc)
    assert code == 0, err
    logs = events(out)
    restored = [e for e in logs if e["event"] == "restored"]
    assert restored and restored[0]["signal_id"] == opened_id
    assert not [e for e in logs if e["event"] == "opened" and e.get("signal_id") == opened_id]
    renamed = [e["note"] for e in logs if e["event"] == "recovery" and e.get("note", "").startswith("renamed")]
    assert renamed == [f"renamed {old_journal.name} to {journal.name} (file names now encode each pair uniquely)",
                       f"renamed {old_snapshot.name} to {snapshot.name} (file names now encode each pair uniquely)"]
    assert not old_journal.exists() and not old_snapshot.exists() and snapshot.exists()
    assert not (cwd / "dump" / "quarantine").exists()


@pytest.mark.e2e
def test_recover_renames_old_files_and_a_dry_run_says_it_would(tmp_path: Path) -> None:
    key = ("ETH/USDT", "ma_cross", "binance")
    old_journal, old_snapshot = write_old_pair(tmp_path / "dump", key, [opened(key)])
    journal, snapshot = pair_paths(tmp_path / "dump", key)

    dry = run(tmp_path, "recover", "--dry-run")
    assert dry.returncode == 10, dry.stdout + dry.stderr
    assert f"would rename {old_journal.name} to {journal.name}" in dry.stdout
    assert old_journal.exists() and not journal.exists()

    done = run(tmp_path, "recover")
    assert done.returncode == 10, done.stdout + done.stderr
    assert f"renamed {old_snapshot.name} to {snapshot.name}" in done.stdout
    assert journal.exists() and snapshot.exists() and not old_journal.exists() and not old_snapshot.exists()
    assert run(tmp_path, "recover").returncode == 0
