"""``livetrader recover``: print what ``livetrader.recover.inspect`` found and exit with its code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import orjson

from livetrader import redaction
from livetrader.config import require_data_dir
from livetrader.service.recover import Findings, inspect


def run(data_dir: Path, *, dry_run: bool, as_json: bool) -> int:
    """Inspect (and repair unless ``dry_run``) ``data_dir``; return the documented exit code."""
    require_data_dir(data_dir, "recover")
    findings = inspect(data_dir, dry_run=dry_run)
    if as_json:
        # Damage notes can quote what a damaged file holds: an output like any other.
        sys.stdout.buffer.write(orjson.dumps(redaction.redact_value(findings.to_dict()), option=orjson.OPT_INDENT_2)
                                + b"\n")
    else:
        print_findings(findings)
    return findings.exit_code


def print_findings(f: Findings) -> None:  # noqa: C901 - a flat list of findings, one branch per kind
    """A plain, readable account: one line per fact, what to do at the end."""
    from livetrader.core.format import format_minute

    out = _Redacting(sys.stdout)
    mode = "dry run: nothing changed" if f.dry_run else "repairs applied"
    out.write(f"Data directory {f.data_dir} ({mode})\n")
    if f.locked_by is not None:
        out.write(f"  a running daemon holds it: pid {f.locked_by.get('pid')} (started {f.locked_by.get('started')})\n")
        if not f.dry_run:
            out.write("  refusing to change anything while it runs; stop it first, or use --dry-run to look\n")
            return
    from livetrader.service.status import halt_lines

    for line in halt_lines(f.halts, None):
        out.write(f"  {line}\n")
    for problem in f.control_problems:
        out.write(f"  operator journal: {problem} (a line a killed `livetrader halt` left unfinished, or damage)\n")
    for path in f.temp_files:
        verb = "would remove" if f.dry_run else "removed"
        out.write(f"  {verb} a temp file left by a crash: {path}\n")
    for note in f.commit_log:
        out.write(f"  commit log: {note}\n")
    for pair in f.pairs:
        name = f"{pair.symbol} / {pair.strategy} / {pair.exchange}"
        if pair.state == "idle":
            held = "no signal"
        else:
            held = f"{pair.state} {pair.signal_id} since {format_minute(pair.since)}"
            held += f"; its first tick re-checks up to {pair.catch_up_minutes} minute(s) of candles"
        out.write(f"  {name}: {held} ({pair.journal_records} journal records)\n")
        if pair.open_order:
            out.write(f"    open order: {pair.open_order}\n")
        if pair.protective_stop:
            out.write(f"    protective stop: {pair.protective_stop}\n")
        if pair.unreconciled:
            out.write(f"    ACCOUNT: {pair.unreconciled}\n")
        for note in pair.repairs:
            out.write(f"    repair: {note}\n")
        for problem in pair.damage:
            out.write(f"    DAMAGE: {problem}\n")
    for problem in f.damage:
        out.write(f"  DAMAGE: {problem}\n")
    for path in f.quarantined:
        if not any(path in problem for problem in f.damage):  # those lines already say where it went
            out.write(f"  quarantined: {path} (its .why.txt note beside it)\n")
    code = f.exit_code
    if code == 0:
        out.write("Nothing to do.\n")
    elif code == 10:
        out.write("Repairs needed: run `livetrader recover` without --dry-run (a daemon also makes them on start).\n"
                  if f.dry_run else "Repairs made.\n")
    elif code == 20:
        if f.quarantined:
            where = f"{len(f.quarantined)} damaged file(s) moved to {f.data_dir / 'quarantine'}/, nothing deleted"
        elif f.dry_run:
            where = "nothing was changed; without --dry-run, recover does what each line says it would"
        else:
            where = "no file was moved"
        out.write(f"Damage that needs a person: see DAMAGE above ({where}).\n")


class _Redacting:
    """Writes to ``stream`` with every registered secret redacted (damage notes quote file contents)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(redaction.redact(text))
