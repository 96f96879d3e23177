"""The real ``livetrader`` help pages read as a user expects: flags as flags, readable placeholders,
``-h`` and ``--version``, and one description of the data directory's default."""

import re

import pytest
from daemon import ROOT, run

import livetrader

pytestmark = pytest.mark.e2e  # every test here starts the real command as a process

COMMANDS = [[], ["backtest"], ["run"], ["recover"], ["report"], ["status"], ["halt"], ["resume"], ["strategies"],
            ["strategies", "check"], ["positions"], ["positions", "forget"], ["positions", "adopt"], ["orders"],
            ["close"], ["cancel"], ["pause"], ["download"], ["walk"]]
ONE_DESCRIPTION = re.compile(
    r"Default:\s+\$LIVETRADER_DATA_DIR,\s+else\s+data_dir\s+in\s+the\s+config,\s+else\s+systemd's\s+"
    r"\$STATE_DIRECTORY,\s+else\s+\./dump"
)


def plain(text: str) -> str:
    """The help page without the box drawing, so a phrase wrapped across lines still matches."""
    return re.sub(r"[│╭╮╰╯─]", " ", text)


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(c) or "livetrader" for c in COMMANDS])
def test_help_pages_show_flags_as_flags_and_readable_placeholders(tmp_path, words):
    long = run(tmp_path, *words, "--help")
    short = run(tmp_path, *words, "-h")
    assert long.returncode == 0 and short.returncode == 0, long.stderr + short.stderr
    assert short.stdout == long.stdout
    assert "<bool>" not in long.stdout, long.stdout  # `--json true` is an error: a flag takes no value
    assert "{" not in long.stdout, long.stdout  # no `{symbols}...` placeholder
    assert re.search(r"-h, --help\s", long.stdout)  # plain (click) help pages: no rich import


def test_symbols_are_shown_as_symbol_placeholders(tmp_path):
    for command in ("backtest", "run"):
        assert f"Usage: livetrader {command} [OPTIONS] SYMBOL..." in run(tmp_path, command, "-h").stdout
    assert "Usage: livetrader report [OPTIONS] [SYMBOL]" in run(tmp_path, "report", "-h").stdout


def test_version_prints_the_version(tmp_path):
    result = run(tmp_path, "--version")
    assert result.returncode == 0 and result.stdout == f"livetrader {livetrader.__version__}\n"
    assert livetrader.__version__ in (ROOT / "pyproject.toml").read_text()


def test_the_data_directory_default_is_described_one_way_in_every_command(tmp_path):
    for command in ("run", "recover", "report", "status", "halt", "resume", "close", "cancel", "pause"):
        page = plain(run(tmp_path, command, "--help").stdout)
        assert ONE_DESCRIPTION.search(page), page
    assert "dump-demo for a --speed or --candles run" in re.sub(r"\s+", " ", plain(run(tmp_path, "run", "-h").stdout))
