"""The real commands run by a user who may not read the working directory or the data
directory (``sudo -u livetrader livetrader status ...`` typed in root's home): one clear message
and the documented exit code, never a traceback.

Root reads everything, so as root the commands run as ``nobody`` (``setpriv``); as any other
user a folder of mode 000 denies that user already.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon import ROOT, environment

pytestmark = pytest.mark.e2e

AS_ROOT = os.geteuid() == 0


def as_other_user(args: list[str]) -> list[str]:
    """``args`` run as a user without root's bypass of file permissions."""
    if not AS_ROOT:
        return args
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *args]


def livetrader(cwd: Path, *args: str, shut_cwd: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the command in ``cwd``; ``shut_cwd``: a working directory the user may not read."""
    env = environment(PYTHONPATH=str(ROOT))
    argv = as_other_user([sys.executable, "-m", "livetrader.cli.app", *args])
    if shut_cwd and not AS_ROOT:
        # Nobody enters a folder of mode 000, its owner included: enter first, then shut it.
        cwd.chmod(0o755)
        argv = ["sh", "-c", 'chmod 000 . && exec "$@"', "sh", *argv]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def place() -> Iterator[Path]:
    """A folder under the system's temporary directory that ``nobody`` can reach (pytest's own
    tmp_path is private to its user)."""
    folder = Path(tempfile.mkdtemp(prefix="livetrader-perm-"))
    folder.chmod(0o755)
    if AS_ROOT:
        probe = subprocess.run(as_other_user([sys.executable, "-c", "import livetrader"]), cwd=folder,
                               capture_output=True, text=True, timeout=60, env=environment(PYTHONPATH=str(ROOT)))
        if probe.returncode != 0:
            shutil.rmtree(folder)
            pytest.skip(f"nobody cannot run this interpreter or import the checkout: {probe.stderr.strip()[-200:]}")
    yield folder
    subprocess.run(["chmod", "-R", "u+rwx", str(folder)], check=False)  # what a test shut, its owner reopens
    shutil.rmtree(folder)


def closed_to_the_user(folder: Path, *, as_cwd: bool = False) -> Path:
    """``folder`` made unreadable and unsearchable for the user the commands run as (as a working
    directory, when not root: shut by the command's own shell once inside, see ``livetrader``)."""
    folder.mkdir(exist_ok=True)
    if AS_ROOT:
        folder.chmod(0o700)  # root-owned: root enters it (as sudo does), nobody cannot read it
    elif not as_cwd:
        folder.chmod(0o000)
    return folder


def open_to_the_user(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    if AS_ROOT:
        os.chown(folder, 65534, 65534)
    return folder


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def test_status_from_a_working_directory_the_user_cannot_read(place: Path) -> None:
    data = open_to_the_user(place / "data")
    # Made closed after its contents: the shipped config beside it must not be reachable either.
    home = place / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "livetrader.toml").write_text("[livetrader]\ndata_dir = 'elsewhere'\n")
    closed_to_the_user(home, as_cwd=True)

    result = livetrader(home, "status", "--data-dir", str(data), shut_cwd=True)
    no_traceback(result)
    assert result.returncode == 3, result.stderr
    assert f"No daemon has run in {data}" in result.stdout

    # Without --data-dir the default ./dump is in that directory: unknown, said plainly (exit 4).
    result = livetrader(home, "status", shut_cwd=True)
    no_traceback(result)
    assert result.returncode == 4, result.stderr
    assert "cannot read the data directory dump (permission denied)" in result.stderr
    assert "sudo -u livetrader livetrader status --data-dir" in result.stderr


def test_status_of_a_data_directory_the_user_cannot_read(place: Path) -> None:
    data = place / "data"
    data.mkdir()
    (data / "status.json").write_text('{"pid": 1, "state": "running"}')
    closed_to_the_user(data)
    for args in (["status", "--data-dir", str(data)], ["status", "--json", "--data-dir", str(data)]):
        result = livetrader(place, *args)
        no_traceback(result)
        assert result.returncode == 4, result.stderr
        assert result.stderr.startswith(f"error: cannot read the data directory {data} (permission denied)")
        assert result.stdout == ""


def test_other_commands_from_a_working_directory_the_user_cannot_read(place: Path) -> None:
    home = closed_to_the_user(place / "home", as_cwd=True)
    strategies = livetrader(home, "strategies", shut_cwd=True)
    no_traceback(strategies)
    assert strategies.returncode == 2 and "strategies folder strategies cannot be read (permission denied)" in \
        strategies.stderr
    for command in ("report", "recover"):
        result = livetrader(home, command, shut_cwd=True)
        no_traceback(result)
        assert result.returncode == 1, result.stderr
        assert "cannot read the data directory dump (permission denied)" in result.stderr
        assert f"livetrader {command} --data-dir" in result.stderr


def test_a_config_file_the_user_cannot_read(place: Path) -> None:
    home = open_to_the_user(place / "home")
    config = home / "config"
    config.mkdir()
    (config / "livetrader.toml").write_text("[livetrader]\n")
    (config / "livetrader.toml").chmod(0o000 if not AS_ROOT else 0o600)
    result = livetrader(home, "strategies")
    no_traceback(result)
    assert result.returncode == 2, result.stderr
    assert "config/livetrader.toml: cannot be read: permission denied" in result.stderr
    # status with --data-dir looks at the directory whatever the config (as for a broken one).
    data = open_to_the_user(place / "data")
    result = livetrader(home, "status", "--data-dir", str(data))
    no_traceback(result)
    assert result.returncode == 3, result.stderr
