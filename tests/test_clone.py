"""A clone needs nothing beside it: the tests and the README read no file outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = re.compile(r"\.\./shared|/work/|ROOT\.parent\b|parent\.parent\.parent")


def test_no_test_and_no_readme_command_reaches_outside_the_repository():
    offenders = []
    for path in [ROOT / "README.md", *ROOT.glob("tests/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob(".ci/*")]:
        if path.name == Path(__file__).name:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_readme_backtest_example_file_is_in_the_repository():
    named = [n for n in re.findall(r"--candles ([\w./-]+)", (ROOT / "README.md").read_text()) if "/" in n]
    assert named and all((ROOT / name).is_file() for name in named), named
