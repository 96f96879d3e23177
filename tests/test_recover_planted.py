"""``livetrader recover`` on files that name no pair: it moves them aside and says so, or says it would."""

import json

import pytest
from daemon import run
from test_recovery import T0, drive

from livetrader.core.price import MINUTE_MS

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process


def recover(cwd, *args):
    return run(cwd, "recover", "--data-dir", "data", *args)


def test_planted_files_that_name_no_pair_are_quarantined_and_the_report_says_where(tmp_path):
    data = tmp_path / "data"
    drive(data, "always-long", [T0, T0 + 40 * MINUTE_MS], crash_on="none")
    journal, pairs = data / "journal", data / "state" / "pairs"
    planted = {journal / "foo.jsonl": b"garbage{{\n", pairs / "bogus.json": b'{"x": 1}',
               pairs / "broken.json": b"not json"}
    for path, content in planted.items():
        path.write_bytes(content)
    (journal / "notes.txt").write_text("an operator's notes: not a journal, left alone\n")
    own = (journal / "BTCUSDT_always-long_sim.jsonl", pairs / "BTCUSDT_always-long_sim.json")
    good = {p: p.read_bytes() for p in own}

    dry = recover(tmp_path, "--dry-run")
    assert dry.returncode == 20, dry.stdout
    for path in planted:
        assert f"DAMAGE: data/{path.relative_to(data)}: " in dry.stdout
    assert dry.stdout.count("recover would move it to data/quarantine/") == 3
    assert "nothing was changed" in dry.stdout and "quarantined files are in" not in dry.stdout
    assert all(path.exists() for path in planted) and not (data / "quarantine").exists()

    real = recover(tmp_path)
    assert real.returncode == 20, real.stdout
    moved = sorted(p for p in (data / "quarantine").iterdir() if not p.name.endswith(".why.txt"))
    assert [p.name.split("_", 1)[1] for p in moved] == ["bogus.json", "broken.json", "foo.jsonl"]
    for path, content in planted.items():
        assert not path.exists()
        target = next(p for p in moved if p.name.endswith("_" + path.name))
        assert target.read_bytes() == content  # moved, nothing deleted
        assert f"moved to data/quarantine/{target.name} (nothing deleted)" in real.stdout
        assert "original path: " in target.with_name(target.name + ".why.txt").read_text()
    assert "3 damaged file(s) moved to data/quarantine/" in real.stdout
    assert (journal / "notes.txt").exists()
    assert {p: p.read_bytes() for p in good} == good  # the pair's own files are untouched

    again = recover(tmp_path, "--json")
    assert again.returncode == 0, again.stdout
    doc = json.loads(again.stdout)
    assert doc["damage"] == [] and doc["quarantined"] == []


def test_damage_without_a_move_does_not_claim_one(tmp_path):
    """The snapshot reflects more records than its journal holds: a person decides, nothing moves."""
    data = tmp_path / "data"
    drive(data, "always-long", [T0, T0 + 40 * MINUTE_MS], crash_on="none")
    journal = data / "journal" / "BTCUSDT_always-long_sim.jsonl"
    journal.write_bytes(journal.read_bytes().splitlines(keepends=True)[0])
    result = recover(tmp_path)
    assert result.returncode == 20, result.stdout
    assert "the journal lost records" in result.stdout
    assert "no file was moved" in result.stdout and "quarantine/" not in result.stdout
    assert not (data / "quarantine").exists()
