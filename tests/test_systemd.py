"""sd_notify against a real AF_UNIX datagram socket, the watchdog gate, and the unit files.

systemd is not PID 1 here: the tests play its part by binding the notification socket
themselves and pointing ``NOTIFY_SOCKET`` at it. The unit files are checked twice: by a small
parser (the directives the issue requires, and the two units kept in step), and by
``systemd-analyze verify`` (systemd's own parser), which CI installs with
``.ci/install-system-deps``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from livetrader.service.systemd import Notifier, PairProgress, WatchdogGate, watchdog_loop

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
PLAIN = UNITS / "livetrader.service"
TEMPLATE = UNITS / "livetrader@.service"
DAEMON = "/opt/livetrader/.venv/bin/livetrader"

#: sun_path is 108 bytes on Linux, NUL included.
MAX_SUN_PATH = 107


# ---------------------------------------------------------------------------------------------
# A stand-in for systemd's notification socket
# ---------------------------------------------------------------------------------------------


class Receiver:
    """The listening end of ``NOTIFY_SOCKET``: a bound AF_UNIX datagram socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, timeout: float = 2.0) -> str:
        """The next datagram, decoded; fails the test when none arrives within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536).decode()
        except TimeoutError:
            pytest.fail(f"no notification within {timeout} s")

    def pending(self) -> list[str]:
        """Every datagram already queued, without waiting."""
        self.sock.setblocking(False)
        messages = []
        try:
            while True:
                messages.append(self.sock.recv(65536).decode())
        except BlockingIOError:
            return messages


def _socket_dir(tmp_path: Path) -> Path:
    """``tmp_path``, or a short directory when ``tmp_path`` would overflow sun_path."""
    if len(str(tmp_path / "notify.sock")) <= MAX_SUN_PATH:
        return tmp_path
    return Path(tempfile.mkdtemp(prefix="lt-", dir="/tmp"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No sd_notify variables inherited from whatever runs the tests (a systemd unit, maybe)."""
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def receiver(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A datagram socket bound in ``tmp_path``, with ``NOTIFY_SOCKET`` pointing at it."""
    directory = _socket_dir(tmp_path)
    path = directory / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    clean_env.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield Receiver(sock)
    finally:
        sock.close()
        if directory != tmp_path:
            shutil.rmtree(directory, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Notifier
# ---------------------------------------------------------------------------------------------


def test_every_message_arrives_as_systemd_expects(receiver: Receiver, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WATCHDOG_USEC", "4000000")
    notifier = Notifier.from_env()
    assert notifier.enabled
    assert notifier.watchdog_interval() == 2.0  # half of WATCHDOG_USEC, in seconds

    assert notifier.extend_timeout(1.5)
    assert receiver.recv() == "EXTEND_TIMEOUT_USEC=1500000"
    assert notifier.ready()
    assert receiver.recv() == "READY=1"
    assert notifier.ready(status="3 pairs, 1 open")
    assert receiver.recv() == "READY=1\nSTATUS=3 pairs, 1 open"
    assert notifier.status("3 pairs\n1 open, last tick 12:00:00Z")
    assert receiver.recv() == "STATUS=3 pairs 1 open, last tick 12:00:00Z"  # one line, always
    assert notifier.watchdog()
    assert receiver.recv() == "WATCHDOG=1"
    assert notifier.stopping()
    assert receiver.recv() == "STOPPING=1"
    assert notifier.stopping(status="stopping: finishing 3 ticks")
    assert receiver.recv() == "STOPPING=1\nSTATUS=stopping: finishing 3 ticks"
    assert notifier.send(STATUS="x", ERRNO=0, READY=True)
    assert receiver.recv() == "STATUS=x\nERRNO=0\nREADY=1"
    assert notifier.notify("MAINPID=1234")
    assert receiver.recv() == "MAINPID=1234"
    assert receiver.pending() == []
    notifier.close()


def test_one_socket_is_kept_open(receiver: Receiver) -> None:
    with Notifier.from_env() as notifier:
        notifier.status("a")
        first = notifier._sock
        for _ in range(5):
            notifier.status("b")
        assert notifier._sock is first
        assert [receiver.recv() for _ in range(6)] == ["STATUS=a"] + ["STATUS=b"] * 5
    assert notifier._sock is None  # closed by the context manager


def test_status_is_truncated_to_one_screen_line(receiver: Receiver) -> None:
    notifier = Notifier.from_env()
    notifier.status("x" * 5000)
    assert receiver.recv() == "STATUS=" + "x" * 1024


def test_abstract_namespace_socket(clean_env: pytest.MonkeyPatch) -> None:
    name = f"livetrader-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)  # Linux abstract namespace: no file anywhere
    try:
        clean_env.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier.from_env()
        assert notifier.address == b"\0" + name.encode()
        assert notifier.ready()
        assert Receiver(sock).recv() == "READY=1"
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_silent_noop(
    clean_env: pytest.MonkeyPatch, logs: list[dict]
) -> None:
    clean_env.setenv("WATCHDOG_USEC", "4000000")  # a watchdog without a socket means nothing
    notifier = Notifier.from_env()
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    assert notifier.ready() is False
    assert notifier.ready(status="s") is False
    assert notifier.status("s") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.extend_timeout(10) is False
    assert notifier.send(READY=1) is False
    assert notifier.notify("READY=1") is False
    notifier.close()
    assert notifier._sock is None  # not even a socket was created
    assert logs == []


def test_empty_notify_socket_is_the_same_as_none(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NOTIFY_SOCKET", "")
    assert not Notifier.from_env().enabled


def test_a_relative_notify_socket_is_refused_with_a_warning(
    clean_env: pytest.MonkeyPatch, logs: list[dict]
) -> None:
    clean_env.setenv("NOTIFY_SOCKET", "run/notify")
    notifier = Notifier.from_env()
    assert not notifier.enabled
    assert notifier.ready() is False
    assert "neither an absolute path nor @abstract" in str(logs)


def test_watchdog_pid_of_another_process_disables_the_watchdog(
    receiver: Receiver, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("WATCHDOG_USEC", "4000000")
    clean_env.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # e.g. our parent's watchdog, inherited
    notifier = Notifier.from_env()
    assert notifier.watchdog_interval() is None
    assert notifier.watchdog() is False
    assert notifier.ready()  # everything else still works
    assert receiver.recv() == "READY=1"
    assert receiver.pending() == []  # and no WATCHDOG=1 was sent


def test_watchdog_pid_equal_to_ours_or_unset_enables_the_watchdog(
    receiver: Receiver, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("WATCHDOG_USEC", "3000000")
    assert Notifier.from_env().watchdog_interval() == 1.5
    clean_env.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_env()
    assert notifier.watchdog_interval() == 1.5
    assert notifier.watchdog()
    assert receiver.recv() == "WATCHDOG=1"
    assert Notifier.from_env(pid=os.getpid() + 7).watchdog_interval() is None


@pytest.mark.parametrize("value", ["", "0", "-5", "abc", "1.5"])
def test_a_malformed_watchdog_usec_means_no_watchdog(
    receiver: Receiver, clean_env: pytest.MonkeyPatch, value: str
) -> None:
    clean_env.setenv("WATCHDOG_USEC", value)
    notifier = Notifier.from_env()
    assert notifier.watchdog_interval() is None
    assert notifier.watchdog() is False


def test_from_env_accepts_an_explicit_mapping(clean_env: pytest.MonkeyPatch) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "10", "WATCHDOG_PID": "42"}, pid=42)
    assert notifier.address == "/run/x"
    assert notifier.watchdog_usec == 10


def test_a_dead_socket_path_does_not_raise_and_is_logged_once(
    tmp_path: Path, clean_env: pytest.MonkeyPatch, logs: list[dict]
) -> None:
    clean_env.setenv("NOTIFY_SOCKET", str(_socket_dir(tmp_path) / "gone.sock"))
    clean_env.setenv("WATCHDOG_USEC", "1000000")
    notifier = Notifier.from_env()
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.status("still here") is False
    assert notifier.stopping() is False
    warnings = [e for e in logs if e["logger"] == "livetrader.service.systemd"]
    assert len(warnings) == 1
    assert "could not notify systemd" in warnings[0]["event"]


def test_a_closed_receiver_does_not_raise(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    # systemd restarted (or gone) after we started: the socket file is left, nobody listens.
    path = _socket_dir(tmp_path) / "stale.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    clean_env.setenv("NOTIFY_SOCKET", str(path))
    notifier = Notifier.from_env()
    assert notifier.ready()
    sock.close()
    assert notifier.status("after the receiver went away") is False


def test_a_full_receiver_never_blocks_the_sender(receiver: Receiver) -> None:
    # Nobody reads: the datagram queue (net.unix.max_dgram_qlen) fills up. A blocking socket
    # would now hang the daemon's event loop; ours drops the message instead.
    notifier = Notifier.from_env()
    started = time.monotonic()
    results = [notifier.status(f"tick {i}") for i in range(5000)]
    assert time.monotonic() - started < 5.0
    assert results[0] is True
    assert False in results
    assert receiver.recv() == "STATUS=tick 0"


# ---------------------------------------------------------------------------------------------
# WatchdogGate
# ---------------------------------------------------------------------------------------------


def _gate(progress: dict[str, PairProgress | tuple[float | None, float]], since: float = 0.0) -> WatchdogGate:
    return WatchdogGate(lambda: progress, since=since)


def test_gate_is_healthy_while_every_pair_ticks_within_its_deadline() -> None:
    gate = _gate({"BTCUSDT/sma": PairProgress(100.0, 90.0), "ETHUSDT/sma": PairProgress(150.0, 300.0)})
    assert gate.healthy(150.0)
    assert gate.healthy(190.0)  # exactly at the deadline still counts
    assert gate.stale(190.0) == []


def test_gate_is_unhealthy_when_one_pair_is_past_its_deadline() -> None:
    gate = _gate({"BTCUSDT/sma": PairProgress(100.0, 90.0), "ETHUSDT/sma": PairProgress(150.0, 300.0)})
    assert not gate.healthy(190.5)
    assert gate.stale(190.5) == ["BTCUSDT/sma"]
    assert gate.check(500.0) == (False, ["BTCUSDT/sma", "ETHUSDT/sma"])


def test_gate_follows_the_provider_on_every_call() -> None:
    progress: dict[str, PairProgress | tuple[float | None, float]] = {"a": PairProgress(0.0, 10.0)}
    gate = _gate(progress)
    assert not gate.healthy(20.0)
    progress["a"] = PairProgress(15.0, 10.0)  # the hung call returned; the tick completed
    assert gate.healthy(20.0)


def test_gate_measures_a_pair_without_a_tick_from_since() -> None:
    gate = _gate({"a": PairProgress(None, 60.0), "b": (1000.0, 60.0)}, since=1000.0)
    assert gate.healthy(1059.0)
    assert gate.stale(1061.0) == ["a", "b"]


def test_gate_with_no_pairs_is_not_healthy() -> None:
    assert not _gate({}).healthy(0.0)
    assert _gate({}).stale(0.0) == []


def test_watchdog_loop_pings_only_while_healthy(receiver: Receiver, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WATCHDOG_USEC", "20000")  # pings every 10 ms
    notifier = Notifier.from_env()
    now = [100.0]
    progress: dict[str, PairProgress | tuple[float | None, float]] = {
        "a": PairProgress(100.0, 60.0),
        "b": PairProgress(100.0, 60.0),
    }
    gate = WatchdogGate(lambda: progress, since=100.0)

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        task = asyncio.create_task(watchdog_loop(notifier, gate, clock=lambda: now[0]))
        await asyncio.sleep(0.1)
        healthy = receiver.pending()
        now[0] = 200.0  # "b" hangs: its last tick is now 100 s old, past its 60 s deadline
        progress["a"] = PairProgress(199.0, 60.0)
        await asyncio.sleep(0.03)  # let a ping already in flight land
        receiver.pending()
        await asyncio.sleep(0.1)
        stuck = receiver.pending()
        progress["b"] = PairProgress(199.5, 60.0)  # it recovers
        await asyncio.sleep(0.1)
        recovered = receiver.pending()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return healthy, stuck, recovered

    healthy, stuck, recovered = asyncio.run(scenario())
    assert len(healthy) >= 3 and set(healthy) == {"WATCHDOG=1"}
    assert stuck == []
    assert len(recovered) >= 3 and set(recovered) == {"WATCHDOG=1"}


def test_watchdog_loop_returns_at_once_without_a_watchdog(clean_env: pytest.MonkeyPatch) -> None:
    gate = _gate({"a": PairProgress(0.0, 1.0)})
    asyncio.run(asyncio.wait_for(watchdog_loop(Notifier.from_env(), gate), 1.0))


def test_watchdog_loop_survives_a_broken_provider(receiver: Receiver, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WATCHDOG_USEC", "20000")

    def broken() -> dict[str, PairProgress]:
        raise RuntimeError("boom")

    async def scenario() -> None:
        task = asyncio.create_task(watchdog_loop(Notifier.from_env(), WatchdogGate(broken, since=0.0)))
        await asyncio.sleep(0.05)
        assert not task.done()  # still running, withholding pings
        task.cancel()

    asyncio.run(scenario())
    assert receiver.pending() == []


# ---------------------------------------------------------------------------------------------
# Unit files: our own reading
# ---------------------------------------------------------------------------------------------

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """Sections of a unit file, each key with *every* value it is given, in order.

    configparser cannot be used as is: systemd allows (and these units use) a key several times,
    e.g. ``EnvironmentFile=`` and ``Environment=``.
    """
    sections: Unit = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}:{number}: a setting outside a section"
        assert "=" in line, f"{path.name}:{number}: not KEY=value: {line!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: Unit, section: str, key: str) -> str:
    """The single value of ``key``; fails if it is missing or given more than once."""
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}= expected once, found {values}"
    return values[0]


REQUIRED = {
    "Unit": {
        "After": "network-online.target",
        "Wants": "network-online.target",
        "StartLimitIntervalSec": "600",
        "StartLimitBurst": "5",
    },
    "Service": {
        "Type": "notify",
        "NotifyAccess": "main",
        "Restart": "on-failure",
        "RestartSec": "5",
        "TimeoutStartSec": "120",
        "TimeoutStopSec": "90",
        "WatchdogSec": "180",
        "MemoryHigh": "1G",
        "MemoryMax": "2G",
        "KillSignal": "SIGTERM",
        "KillMode": "mixed",
        "WorkingDirectory": "/opt/livetrader",
        "User": "livetrader",
        "Group": "livetrader",
        "UMask": "0077",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
        "RestrictNamespaces": "yes",
        "SystemCallArchitectures": "native",
    },
    "Install": {"WantedBy": "multi-user.target"},
}

#: Per unit: the instance part of paths ("" for the plain unit), and its config file.
VARIANTS = {
    PLAIN: ("", "/etc/livetrader/livetrader.toml", "-/etc/livetrader/credentials.env"),
    TEMPLATE: ("/%i", "/etc/livetrader/%i.toml", "-/etc/livetrader/%i.credentials.env"),
}


@pytest.mark.parametrize("path", [PLAIN, TEMPLATE], ids=lambda p: p.name)
def test_unit_has_the_required_directives(path: Path) -> None:
    unit = parse_unit(path)
    assert set(unit) == {"Unit", "Service", "Install"}
    for section, expected in REQUIRED.items():
        for key, value in expected.items():
            assert one(unit, section, key) == value, f"{path.name}: [{section}] {key}"


#: RSS of 10,000 pairs measured by the bench (README): the memory limits must leave room above it.
MEASURED_10K_PAIRS_BYTES = 355 * 2**20


def _bytes(size: str) -> int:
    return int(size[:-1]) * 2 ** (10 * "KMGT".index(size[-1]) + 10) if size[-1] in "KMGT" else int(size)


@pytest.mark.parametrize("path", [PLAIN, TEMPLATE], ids=lambda p: p.name)
def test_unit_bounds_memory_well_above_what_10000_pairs_use(path: Path) -> None:
    service = {"Service": parse_unit(path)["Service"]}
    high, limit = _bytes(one(service, "Service", "MemoryHigh")), _bytes(one(service, "Service", "MemoryMax"))
    assert 2 * MEASURED_10K_PAIRS_BYTES <= high < limit, f"{path.name}: MemoryHigh {high}, MemoryMax {limit}"


@pytest.mark.parametrize("path", [PLAIN, TEMPLATE], ids=lambda p: p.name)
def test_unit_paths_agree_with_each_other(path: Path) -> None:
    instance, config, credentials = VARIANTS[path]
    service = parse_unit(path)["Service"]
    state = one({"Service": service}, "Service", "StateDirectory")
    assert state == "livetrader" + instance
    # The data directory, the one writable path and the state directory are the same place.
    assert one({"Service": service}, "Service", "ReadWritePaths") == f"%S/{state}"
    assert f"LIVETRADER_DATA_DIR=%S/{state}" in service["Environment"]
    assert credentials in service["EnvironmentFile"]

    words = one({"Service": service}, "Service", "ExecStart").split()
    assert words[:2] == [DAEMON, "run"]
    assert "$LIVETRADER_ARGS" in words  # unbraced: systemd splits it into separate arguments
    assert words[words.index("--config") + 1] == config


def test_template_differs_from_the_plain_unit_only_where_the_instance_matters() -> None:
    plain, template = parse_unit(PLAIN), parse_unit(TEMPLATE)
    per_instance = {"Description", "EnvironmentFile", "ExecStart", "Environment", "StateDirectory", "ReadWritePaths"}
    for section in plain:
        keys = (set(plain[section]) | set(template[section])) - per_instance
        drift = {k: (plain[section].get(k), template[section].get(k)) for k in keys
                 if plain[section].get(k) != template[section].get(k)}
        assert drift == {}, f"[{section}] differs between the units; edit both"


# ---------------------------------------------------------------------------------------------
# Unit files: systemd's own reading
# ---------------------------------------------------------------------------------------------


def _systemd_analyze() -> str:
    """The path of systemd-analyze; skips locally and fails in CI when it is missing."""
    found = shutil.which("systemd-analyze")
    if found:
        return found
    message = "systemd-analyze is missing: run .ci/install-system-deps (installs the 'systemd' package)"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(message)  # in CI a skip would hide that the units were never verified
    pytest.skip(message)


def _verify(analyze: str, directory: Path, *units: str) -> tuple[int, list[str]]:
    """Run ``systemd-analyze verify`` on ``units`` found in ``directory``; (exit code, output lines)."""
    env = dict(os.environ)
    # Our directory first; the trailing ":" keeps the built-in search path, so dependencies
    # such as network-online.target and multi-user.target resolve as on a real machine.
    env["SYSTEMD_UNIT_PATH"] = f"{directory}:"
    env["SYSTEMD_LOG_COLOR"] = "0"
    args = [analyze, "verify"]
    if "--recursive-errors" in subprocess.run([analyze, "verify", "--help"], capture_output=True, text=True,
                                              env=env).stdout:
        args.append("--recursive-errors=no")  # judge our units, not the distribution's (systemd ≥ 250)
    result = subprocess.run([*args, *units], capture_output=True, text=True, env=env, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return result.returncode, lines


def _copy_units(directory: Path, executable: str) -> None:
    """The unit files with ExecStart's program replaced by ``executable``, which exists here.

    verify checks that ExecStart's program is executable; /opt/livetrader is not installed on
    a test machine, and that one complaint is the only one to discount. User=livetrader is
    not checked by verify (the user is resolved when the service starts).
    """
    directory.mkdir(parents=True, exist_ok=True)
    for source in (PLAIN, TEMPLATE):
        text = source.read_text()
        assert DAEMON in text
        (directory / source.name).write_text(text.replace(DAEMON, executable))


@pytest.mark.e2e
def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    units = tmp_path / "units"
    _copy_units(units, shutil.which("true") or "/bin/true")
    code, lines = _verify(analyze, units, "livetrader.service", "livetrader@demo.service")
    # Anything said about our units is a problem (verify only warns, exit code 0, for an unknown
    # key or a value it cannot parse, so the output is what matters); lines about other units
    # (a distribution's own files in a container) are not ours to judge.
    ours = [line for line in lines if "livetrader" in line]
    assert ours == [], "\n".join(lines)
    assert code == 0, "\n".join(lines)


@pytest.mark.e2e
def test_systemd_analyze_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    # The check above only means something if verify's complaints reach us: break a copy.
    analyze = _systemd_analyze()
    units = tmp_path / "units"
    _copy_units(units, shutil.which("true") or "/bin/true")
    broken = units / "livetrader.service"
    broken.write_text(re.sub(r"^WatchdogSec=.*$", "WatchdogSec=three minutes", broken.read_text(), flags=re.M))
    _, lines = _verify(analyze, units, "livetrader.service")
    assert any("livetrader.service" in line and "three minutes" in line for line in lines), "\n".join(lines)


@pytest.mark.e2e
def test_the_real_daemon_path_is_the_only_verify_complaint(tmp_path: Path) -> None:
    # Unmodified units: on a machine without /opt/livetrader, verify complains about ExecStart's
    # program, and about nothing else. (Installed there, it says nothing: also fine.)
    analyze = _systemd_analyze()
    units = tmp_path / "units"
    units.mkdir()
    for source in (PLAIN, TEMPLATE):
        shutil.copy(source, units / source.name)
    code, lines = _verify(analyze, units, "livetrader.service", "livetrader@demo.service")
    ours = [line for line in lines if "livetrader" in line]
    if Path(DAEMON).exists():
        assert ours == [] and code == 0, "\n".join(lines)
    else:
        assert ours and all(f"Command {DAEMON} is not executable" in line for line in ours), "\n".join(lines)
