"""One run per output directory: a lock file that names its holder and dies with it.

Two runs writing the same directory (two `fgclip-vad frames` into one shard directory, two
trainers into one output directory, e.g. a forgotten nohup run and a new one) would overwrite
each other's files without an error. Every writing stage therefore takes `RunLock(directory)`
before it touches anything there, and a second run stops with a message naming the first.

The lock is a POSIX record lock (fcntl) on `directory/.fgclip-run.lock`. The kernel releases it
when its process ends in any way, `kill -9` and crashes included, so a dead run never blocks the
next one. While held, the file records the holder's pid, host, start time and command line for
the message; a clean release empties it, so a record found by the next run is a dead holder's,
taken over and reported. Record
locks are not inherited by forked workers (stage 1's decoders), and they work across the nodes
of a shared file system that supports locking (NFS with lockd, NFSv4, Lustre, GPFS). Where the
file system refuses locks altogether, the record itself decides: a holder on this host that is
no longer running (pid gone, or reused by a process started later) is stale, one on another
host is taken as alive, and the message says to delete the file if that run is gone.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

LOCK_FILE_NAME = ".fgclip-run.lock"

# Lock files this process holds (resolved path -> lock). A POSIX lock is per process, so a second
# acquire here would succeed silently, and closing its file would drop the first one's lock.
_HELD: "weakref.WeakValueDictionary[Path, RunLock]" = weakref.WeakValueDictionary()


class RunLockError(RuntimeError):
    """The directory is in use by another run; the message names it and what to do."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a lock: what its file records."""

    pid: int
    host: str
    started: str  # ISO time the holder took the lock
    process_start_s: float  # the holder's process creation time (tells a reused pid apart)
    command: str

    @classmethod
    def of_this_process(cls) -> "LockHolder":
        return cls(pid=os.getpid(), host=socket.gethostname(),
                   started=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                   process_start_s=psutil.Process().create_time(), command=" ".join(sys.argv))

    @classmethod
    def parse(cls, text: str) -> "LockHolder | None":
        try:
            values = json.loads(text)
            return cls(int(values["pid"]), str(values["host"]), str(values["started"]),
                       float(values.get("process_start_s", 0.0)), str(values.get("command", "")))
        except (ValueError, KeyError, TypeError):
            return None  # empty (a holder died while writing it) or not ours

    def to_json(self) -> str:
        return json.dumps(self.__dict__, ensure_ascii=False) + "\n"

    def describe(self) -> str:
        command = f", command `{self.command}`" if self.command else ""
        return f"pid {self.pid} on host {self.host}, started {self.started}{command}"

    def running_here(self) -> bool:
        """True unless this holder is known dead: a pid on this host that is gone or reused."""
        if self.host != socket.gethostname():
            return True  # cannot tell from here
        try:
            return abs(psutil.Process(self.pid).create_time() - self.process_start_s) < 1.0
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return False
        except psutil.AccessDenied:
            return True


class RunLock:
    """`with RunLock(directory, what="fgclip-vad frames"):` holds `directory` for this process.

    `acquire()` raises RunLockError if another live run holds it. `taken_over` is the record
    of a dead run whose leftover lock file this run took over (None if there was none).
    """

    def __init__(self, directory: os.PathLike | str, *, what: str, hint: str = "") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE_NAME
        self.what = what  # the kind of run, for messages: "fgclip-vad frames"
        self.hint = hint  # how to avoid the clash, e.g. "choose another --out"
        self.taken_over: LockHolder | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> LockHolder | None:
        """The record in the lock file, read through the held descriptor: opening the file again
        in this process and closing it would drop the lock (POSIX record lock semantics)."""
        return _read_holder(self._fd) if self._fd is not None else None

    def acquire(self) -> "RunLock":
        if self.held:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        if key in _HELD:
            raise self._refusal(LockHolder.of_this_process(), "an earlier run in this same process")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except OSError as err:
                if err.errno in (errno.EACCES, errno.EAGAIN):
                    raise self._refusal(_read_holder(fd), "another run") from None
                locked = False  # this file system does not lock: the record alone decides
                log.warning("%s: the file system refuses locks (%s); relying on the pid in the lock file", self.path, err)
            previous = _read_holder(fd)
            if not locked and previous is not None and previous.running_here():
                raise self._refusal(previous, "another run", unlockable=True)
            if previous is not None:
                self.taken_over = previous
                log.warning("%s: taking over the lock of a run that is no longer running (%s)",
                            self.directory, previous.describe())
            os.ftruncate(fd, 0)
            os.pwrite(fd, LockHolder.of_this_process().to_json().encode("utf-8"), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _HELD[key] = self
        return self

    def release(self) -> None:
        """Give the directory up. Idempotent. The file stays, emptied: a record left in it means
        its holder died without releasing it."""
        if self._fd is None:
            return
        _HELD.pop(self.path.resolve(), None)
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # a file system gone read-only or full: the record then reads as a dead holder's, harmlessly
        os.close(self._fd)  # closing drops the record lock
        self._fd = None

    def _refusal(self, holder: LockHolder | None, who: str, *, unlockable: bool = False) -> RunLockError:
        named = holder.describe() if holder is not None else "it is just starting"
        stale = f" If that run is gone, delete {self.path}." if unlockable else ""
        hint = f", or {self.hint}" if self.hint else ""
        return RunLockError(
            f"{self.directory} is in use by {who} of `{self.what}` ({named}). Two runs writing one directory "
            f"would overwrite each other's files: wait for it to finish or stop it{hint}.{stale}"
        )

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the process exit drops the lock anyway
            pass


def _read_holder(fd: int) -> LockHolder | None:
    return LockHolder.parse(os.pread(fd, 65536, 0).decode("utf-8", errors="replace"))
