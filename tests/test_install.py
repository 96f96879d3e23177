"""The service install steps (issue 17, item 11), run against a scratch root: ``systemd/install.sh``
with ``DESTDIR`` makes the unit's ``ExecStart=`` exist, in a virtualenv of its own, from a clean
copy of the checkout (no developer ``.venv``, ``dump`` or ``dump-demo``), with the config files
readable as the README says. No user is created and nothing outside the scratch root changes.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(".venv", ".git", "dump", "dump-demo", "__pycache__", "*.egg-info", ".pytest_cache",
                                 ".ruff_cache", "build")


def checkout(tmp_path: Path) -> Path:
    """A copy of this checkout as a developer has it: with a .venv and the demo's data directories."""
    src = tmp_path / "checkout"
    shutil.copytree(ROOT, src, ignore=IGNORED)
    (src / ".venv" / "bin").mkdir(parents=True)
    (src / ".venv" / "bin" / "livetrader").write_text("#!/checkout/.venv/bin/python\n")
    (src / "dump" / "journal").mkdir(parents=True)
    (src / "dump-demo" / "state").mkdir(parents=True)
    return src


def install(src: Path, destdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "DESTDIR": str(destdir), **env}
    return subprocess.run(["sh", str(src / "systemd" / "install.sh")], capture_output=True, text=True,
                          env=environ, timeout=300, cwd=src)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.e2e
def test_install_sh_in_a_scratch_root_gives_the_units_execstart_in_a_clean_virtualenv(tmp_path):
    src = checkout(tmp_path)
    dest = tmp_path / "root"
    # --no-deps: the dependencies would come from the package index as usual; livetrader itself
    # is what must land in the new virtualenv (built from the copy, not linked to the checkout).
    result = install(src, dest, PIP_OPTIONS="--no-deps")
    assert result.returncode == 0, result.stdout + result.stderr

    unit = (dest / "etc/systemd/system/livetrader.service").read_text()
    assert unit == (ROOT / "systemd/livetrader.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M).group(1)
    assert exec_start == "/opt/livetrader/.venv/bin/livetrader"
    daemon = dest / exec_start.lstrip("/")
    assert daemon.is_file() and os.access(daemon, os.X_OK)
    venv = dest / "opt/livetrader/.venv"
    assert daemon.read_text().splitlines()[0].startswith(f"#!{venv}/bin/python")  # its own interpreter

    # A clean copy: nothing of the developer's virtualenv or data directories.
    app = dest / "opt/livetrader"
    assert not (app / "dump").exists() and not (app / "dump-demo").exists() and not (app / ".git").exists()
    assert "#!/checkout" not in daemon.read_text()
    # livetrader is installed into the new virtualenv, not as an editable link to the checkout.
    where = subprocess.run([str(venv / "bin/python"), "-c", "import livetrader; print(livetrader.__file__)"],
                           capture_output=True, text=True, cwd="/", check=True).stdout.strip()
    assert where.startswith(f"{venv}/lib/") and "site-packages/livetrader/" in where
    assert not list(venv.glob("lib/*/site-packages/__editable__*"))
    assert not list(venv.glob("lib/*/site-packages/*.pth")) or all(
        str(src) not in p.read_text() for p in venv.glob("lib/*/site-packages/*.pth"))
    assert mode(app) & 0o005 == 0o005 and mode(app / "strategies" / "my_strategy.py") & 0o004  # readable

    # The files the unit reads, with the owners' modes the README gives.
    etc = dest / "etc/livetrader"
    for name in re.findall(r"^EnvironmentFile=-?/etc/livetrader/(\S+)", unit, re.M):
        assert (etc / name).is_file(), name
    assert mode(etc / "livetrader.toml") == 0o640 and mode(etc / "livetrader.env") == 0o640
    assert mode(etc / "credentials.env") == 0o600
    args = (etc / "livetrader.env").read_text()
    strategies = re.search(r"--strategies-dir (\S+)", args).group(1)
    assert (dest / strategies.lstrip("/") / "my_strategy.py").is_file()
    assert "--config /etc/livetrader/livetrader.toml" in unit


@pytest.mark.e2e
def test_install_sh_without_venv_support_says_which_package_to_install(tmp_path):
    result = install(ROOT, tmp_path / "root", PYTHON="false")
    assert result.returncode == 1
    assert "apt-get install python3-venv" in result.stderr
    assert not (tmp_path / "root").exists()


def test_the_readme_service_steps_use_the_install_script_and_the_units_paths():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Running as a service"):readme.index("- `READY=1` is sent only")]
    steps = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    assert "sudo systemd/install.sh" in steps and "apt-get install -y python3-venv" in steps
    assert "cp -r ." not in steps  # would copy the developer's .venv and dump
    unit = (ROOT / "systemd/livetrader.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M).group(1)
    assert f"sudo -u livetrader {exec_start} status --data-dir /var/lib/livetrader" in steps
