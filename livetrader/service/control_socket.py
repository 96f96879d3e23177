"""The daemon's control socket, ``<data-dir>/control.sock``, and the commands' side of it.

The daemon listens on a unix socket of mode 0600 in its data directory, made once it holds the
directory's lock and removed at exit: only the daemon's user (and root) may connect. The socket
is bound under a temporary name, given its mode, then renamed over ``control.sock``, so a stale
one left by a killed daemon is replaced and nobody ever finds it open to others.

The protocol is one line each way: the command sends one JSON object (``live.commands.Request``)
and a newline, the daemon answers with one JSON object (``{"ok", "code", "message"}``) and a
newline once the pair's loop carried the request out, then closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from livetrader.errors import LivetraderError, UsageError
from livetrader.live.commands import Commands, Request, refused
from livetrader.logs import get_logger

log = get_logger(__name__)

SOCKET_NAME = "control.sock"
#: The longest request line read (a request is a few short fields).
MAX_REQUEST = 64 * 1024
#: Real seconds a connection may take to send its request.
READ_SECONDS = 5.0
#: Real seconds a command waits for the daemon's answer (a pair mid-tick finishes it first; a
#: strategy may take up to ``strategy_timeout_seconds``).
ANSWER_SECONDS = 60.0
#: ``sun_path`` holds 108 bytes: a longer path is reached through the directory's descriptor.
_SUN_PATH = 100


def socket_path(data_dir: Path) -> Path:
    """Where the control socket of ``data_dir`` lives."""
    return Path(data_dir) / SOCKET_NAME


@contextlib.contextmanager
def _reachable(path: Path) -> Iterator[str]:
    """``path`` as an address ``bind``/``connect`` take, however deep the data directory is."""
    if len(os.fsencode(str(path))) < _SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class NoDaemon(LivetraderError):
    """No daemon runs on the data directory: nothing was changed (exit 3, as ``livetrader status``)."""

    exit_code = 3


class NotAllowed(LivetraderError):
    """This user may not use the daemon's control socket (exit 4, as ``livetrader status``)."""

    exit_code = 4


class ControlServer:
    """The daemon's side: listens on ``control.sock`` and hands each request to ``Commands``."""

    def __init__(self, data_dir: Path, commands: Commands) -> None:
        self.path = socket_path(data_dir)
        self.commands = commands
        self._server: asyncio.Server | None = None
        self._inode: int | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Bind ``control.sock`` (mode 0600, replacing a stale one) and listen."""
        temporary = self.path.with_name(f".{SOCKET_NAME}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with _reachable(temporary) as address:
                sock.bind(address)
            # Before listen(): until then a connect is refused, so no one connects while it is wider.
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)  # a stale socket of a killed daemon is replaced at once
            self._inode = os.stat(self.path).st_ino
            sock.listen(16)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_REQUEST)
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise

    async def close(self) -> None:
        """Stop listening, refuse the requests still waiting, and remove ``control.sock`` if it is ours."""
        self.commands.shut()
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
        try:
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        except OSError:
            pass  # gone already, or another's now: leave it

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            answer = await self._answer(reader, writer)
            writer.write(orjson.dumps(answer) + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the command went away: what it asked is done all the same (the log says so)
        except Exception as exc:  # noqa: BLE001 - one bad connection never touches the daemon
            log.warning("control socket: connection failed", error=str(exc))
        finally:
            writer.close()
            if task is not None:
                self._handlers.discard(task)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, Any]:
        uid = _peer_uid(writer)
        if uid is not None and uid not in (os.getuid(), 0):
            # The socket's mode already keeps others out; this holds if its mode is ever widened.
            log.warning("control socket: refused a connection of another user", uid=uid)
            return refused("only the daemon's user may control it").as_dict()
        try:
            line = await asyncio.wait_for(reader.readline(), READ_SECONDS)
        except (TimeoutError, ValueError):
            return refused("no request line (one JSON object and a newline) in time, or too long").as_dict()
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            return refused("the request is not JSON").as_dict()
        request = Request.of(doc)
        if isinstance(request, str):
            return refused(request).as_dict()
        log.info("operator request", command=request.command, target=request.describe(), uid=uid)
        answer = await self.commands.submit(request)
        log.info("operator request answered", command=request.command, target=request.describe(),
                 code=answer.code, answer=answer.message)
        return answer.as_dict()


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid of the process at the other end (``SO_PEERCRED``), None when it cannot be had."""
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


# --- the commands' side ---------------------------------------------------------------------------


def ask(data_dir: Path, request: dict[str, Any], *, timeout: float = ANSWER_SECONDS) -> dict[str, Any]:
    """Send ``request`` to the daemon of ``data_dir`` and return its answer.

    Raises :class:`NoDaemon` when no daemon runs there, :class:`NotAllowed` when this user may
    not use its socket, and ``LivetraderError`` when the daemon does not answer in time.
    """
    from livetrader.store.lock import is_locked

    path = socket_path(data_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            with _reachable(path) as address:
                sock.connect(address)
        except PermissionError:
            raise NotAllowed(f"permission denied on {path}: only the daemon's user may control it (e.g. sudo -u "
                             f"livetrader livetrader ...); nothing changed") from None
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            if _locked(data_dir, is_locked):
                raise LivetraderError(f"the daemon on {data_dir} runs but has no control socket ({path}): it was "
                                      "started by an older livetrader, or is still starting; nothing changed") from None
            raise NoDaemon(f"no daemon runs on {data_dir}: nothing changed") from None
        sock.settimeout(timeout)
        sock.sendall(orjson.dumps(request) + b"\n")
        answer = _read_line(sock)
    except TimeoutError:
        raise LivetraderError(f"the daemon on {data_dir} did not answer within {timeout:g} s (a pair's tick may be "
                              "slow); the request may still be carried out: see livetrader status") from None
    finally:
        sock.close()
    try:
        doc = orjson.loads(answer)
    except orjson.JSONDecodeError:
        raise LivetraderError(f"the daemon on {data_dir} gave no answer (it may have stopped meanwhile): see "
                              "livetrader status") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("message"), str):
        raise LivetraderError(f"the daemon on {data_dir} answered something unexpected: {answer[:200]!r}")
    return doc


def _locked(data_dir: Path, is_locked: Any) -> bool:
    try:
        return bool(is_locked(data_dir))
    except OSError:
        return False


def _read_line(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)


def carry_out(data_dir: Path, request: dict[str, Any]) -> int:
    """Ask the daemon, print its answer, and return the exit code it carries (2: refused)."""
    import sys

    doc = ask(data_dir, request)
    code = doc.get("code")
    if not isinstance(code, int):
        code = 0 if doc.get("ok") else 1
    if code == 0:
        sys.stdout.write(doc["message"] + "\n")
        return 0
    if code == UsageError.exit_code:
        raise UsageError(doc["message"])
    raise LivetraderError(doc["message"])
