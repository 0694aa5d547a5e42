"""Reader processes that copy shard data into one shared-memory block: the machinery that the
training loader (`fgclip.train.loader`, reads in `fgclip.train.loader_worker`) and evaluation
(`fgclip.eval.reader`) share. They bring only their block layout and their read function.

    main process: ReaderPool ──(task id, task)──> reader process ──job(shards, views, task)──┐
                  next_result() <──("ok", task id, result) or ("error", task id, message)──┘
                  the data itself lands in the shared block, which the main process may pin

Parallel reading needs processes: h5py serialises every call of a process behind one lock.
Each reader is a fresh interpreter, `python -m fgclip.reader_pool FD` (not a multiprocessing
child): it imports only numpy, h5py, the shard schema and the module of its job, never torch or
the caller's main script, so it starts in a fraction of a second, needs no
`if __name__ == "__main__"` guard in the user's script, and inherits no CUDA context and no open
HDF5 file. It opens the shard files itself. Tasks and replies travel over a socket pair (FD);
when the main process dies, the socket closes and the reader exits. With no reader processes
the same job runs in the main process, task by task (debugging, tiny sets), with the same
replies and the same failure messages.
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import subprocess
import sys
import traceback
import weakref
from collections import deque
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from pipeline.shards import ShardFormatError, ShardReader

log = logging.getLogger(__name__)

# Shard files a reader keeps open at once (each open file costs a little memory and a handle).
_MAX_OPEN_SHARDS = 64

ArraySpec = tuple[str, tuple[int, ...], np.dtype]  # name, shape, dtype of one array of the block


def block_offsets(arrays: Sequence[ArraySpec]) -> tuple[dict[str, int], int]:
    """Byte offset of each array inside the block (page-aligned, so each pins cleanly), and the size."""
    offsets, offset = {}, 0
    for name, shape, dtype in arrays:
        offset = (offset + 4095) // 4096 * 4096
        offsets[name] = offset
        offset += int(np.prod(shape)) * np.dtype(dtype).itemsize
    return offsets, offset


def block_views(arrays: Sequence[ArraySpec], buffer) -> dict[str, np.ndarray]:
    """Numpy arrays over `buffer` (the shared block), one per array of the layout."""
    offsets, _ = block_offsets(arrays)
    return {name: np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offsets[name]) for name, shape, dtype in arrays}


@dataclass(frozen=True)
class RecordSource:
    """Where a record lives: shard file, record inside it, stored frames, regions, its video."""

    shard: str
    local_index: int
    stored_frames: int
    region_count: int = 0
    video: str = ""


def read_failure_message(source: RecordSource, err: BaseException) -> str:
    """Names the shard, record and video of a failed read (a ShardFormatError names them itself);
    the traceback is added for errors a damaged file does not explain."""
    if isinstance(err, ShardFormatError):
        return str(err)
    video = f" (video {source.video})" if source.video else ""
    message = f"{source.shard}: record {source.local_index}{video}: {err if str(err) else type(err).__name__}"
    if not isinstance(err, (OSError, RuntimeError, ValueError, KeyError)):
        message += "\n" + "".join(traceback.format_exception(err))
    return message


class ReadFailed(RuntimeError):
    """A read job's failure as the main process sees it; `damaged_shard` when a shard is at fault."""

    def __init__(self, message: str, damaged_shard: bool = False):
        super().__init__(message)
        self.damaged_shard = damaged_shard


class OpenShards:
    """A small cache of open ShardReaders (opened in this process, never inherited)."""

    def __init__(self) -> None:
        self._readers: dict[str, ShardReader] = {}

    def get(self, path: str) -> ShardReader:
        reader = self._readers.get(path)
        if reader is None:
            if len(self._readers) >= _MAX_OPEN_SHARDS:
                self._readers.pop(next(iter(self._readers))).close()
            reader = self._readers[path] = ShardReader(path)
        return reader

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


# A read job: a picklable callable (an instance of a class of an importable module without torch)
# called in each reader as job(open_shards, views_of_the_block, task) -> a picklable result.
ReadJob = Callable[[OpenShards, dict, Any], Any]


@dataclass(frozen=True)
class _Setup:
    shm_name: str
    nbytes: int
    arrays: tuple[ArraySpec, ...]
    job: ReadJob


def _run_job(job: ReadJob, shards: OpenShards, views: dict, task_id: Hashable, task) -> tuple:
    """One task -> its reply: ("ok", id, result) or ("error", id, message, damaged_shard)."""
    try:
        return ("ok", task_id, job(shards, views, task))
    except ReadFailed as err:
        return ("error", task_id, str(err), err.damaged_shard)
    except Exception as err:  # noqa: BLE001 - every failure goes back to the main process with its task
        message = str(err) or type(err).__name__
        if not isinstance(err, (OSError, RuntimeError, ValueError, KeyError)):
            message += "\n" + traceback.format_exc()
        return ("error", task_id, message, isinstance(err, ShardFormatError))


class ReaderPool:
    """`num_readers` reader processes around one shared block laid out as `arrays`.

    `submit(task_id, task, reader=None)` hands a task to the given reader (or the least busy);
    `next_result()` waits for the next finished one, in completion order, and returns
    (task_id, result); a failed task raises ReadFailed, a reader that died raises RuntimeError
    naming `what` with `advice`. With `pin`, the block is page-locked for asynchronous GPU
    copies before any reader touches it. `views` are numpy arrays over the block.
    """

    def __init__(self, arrays: Sequence[ArraySpec], job: ReadJob, *, num_readers: int, pin: bool = False,
                 what: str = "reader process", advice: str = "check the system log", poll_s: float = 1.0):
        arrays = tuple((name, tuple(int(n) for n in shape), np.dtype(dtype)) for name, shape, dtype in arrays)
        _, nbytes = block_offsets(arrays)
        self.what, self.advice, self.poll_s = what, advice, poll_s
        self._shm = shared_memory.SharedMemory(create=True, size=max(1, nbytes))
        self.views = block_views(arrays, self._shm.buf)
        self.pinned = _pin(self._shm.buf, nbytes) if pin and nbytes else None
        setup = _Setup(self._shm.name, max(1, nbytes), arrays, job)
        self.workers = [_Worker.start(setup, what, advice) for _ in range(num_readers)]
        self._job = job if not self.workers else None  # no readers: the job runs in this process
        self._local_shards = OpenShards()
        self._local_replies: deque = deque()
        self._finalizer = weakref.finalize(self, _release, self.workers, self._shm, self.pinned, self._local_shards)

    @property
    def num_readers(self) -> int:
        return len(self.workers)

    def idle(self) -> bool:
        """Every reader alive and no task unanswered: the pool can take a new set of tasks."""
        if self._job is not None:
            return not self._local_replies
        return bool(self.workers) and all(w.alive() and not w.outstanding for w in self.workers)

    def submit(self, task_id: Hashable, task, reader: int | None = None) -> None:
        if self._job is not None:
            self._local_replies.append(_run_job(self._job, self._local_shards, self.views, task_id, task))
            return
        worker = self.workers[reader] if reader is not None else min(self.workers, key=lambda w: w.outstanding)
        worker.send((task_id, task))

    def next_result(self) -> tuple[Hashable, Any]:
        """The next finished (task_id, result); raises ReadFailed for a failed read."""
        if not (self._local_replies if self._job is not None else any(w.outstanding for w in self.workers)):
            raise RuntimeError("no read is pending: every task submitted has been answered")
        reply = self._local_replies.popleft() if self._job is not None else self._receive()
        if reply[0] == "error":
            raise ReadFailed(reply[2], reply[3])
        return reply[1], reply[2]

    def _receive(self) -> tuple:
        while True:
            ready = wait([w.conn for w in self.workers], timeout=self.poll_s)
            if ready:
                return next(w for w in self.workers if w.conn is ready[0]).receive()
            dead = [w for w in self.workers if not w.alive()]
            if dead:
                raise RuntimeError(f"{len(dead)} {self.what}(s) died (exit code {dead[0].proc.returncode}), e.g. killed "
                                   f"for memory; {self.advice}")

    def close(self) -> None:
        """Stop the readers, unpin and free the block (views of it held elsewhere keep only their copy)."""
        self.views = {}
        self._finalizer()

    def __enter__(self) -> "ReaderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pin(buffer, nbytes: int) -> int | None:
    """Page-lock the block for the GPU (cudaHostRegister); its address, or None if refused."""
    import torch

    array = np.frombuffer(buffer, dtype=np.uint8, count=nbytes)
    pointer = array.ctypes.data
    del array  # no view may outlive the block
    try:
        code = torch.cuda.cudart().cudaHostRegister(pointer, nbytes, 0)
    except Exception as err:  # noqa: BLE001 - pageable memory still works, only slower
        log.warning("could not pin the shared read buffers (%s); copies to the GPU will be slower", err)
        return None
    if int(getattr(code, "value", code)) != 0:
        log.warning("cudaHostRegister refused the shared read buffers (error %s); copies to the GPU will be slower", code)
        return None
    return pointer


class _Worker:
    """One `python -m fgclip.reader_pool` process and the socket it is served over."""

    def __init__(self, proc: subprocess.Popen, conn: Connection, what: str, advice: str):
        self.proc, self.conn, self.what, self.advice = proc, conn, what, advice
        self.outstanding = 0

    @classmethod
    def start(cls, setup: _Setup, what: str, advice: str) -> "_Worker":
        ours, theirs = socket.socketpair()
        # The child finds this package (and the job's module) wherever the parent found it.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            proc = subprocess.Popen([sys.executable, "-m", "fgclip.reader_pool", str(theirs.fileno())],
                                    pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        worker = cls(proc, Connection(ours.detach()), what, advice)
        worker.conn.send(setup)
        return worker

    def send(self, message) -> None:
        try:
            self.conn.send(message)
        except OSError as err:
            raise self._died() from err
        self.outstanding += 1

    def receive(self) -> tuple:
        try:
            reply = self.conn.recv()
        except (EOFError, OSError) as err:
            raise self._died() from err
        self.outstanding -= 1
        return reply

    def _died(self) -> RuntimeError:
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        return RuntimeError(f"{self.what} {self.proc.pid} died (exit code {self.proc.returncode}), e.g. killed for "
                            f"memory; {self.advice}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.conn.close()


def _release(workers: list, shm: shared_memory.SharedMemory, pinned: int | None, local_shards: OpenShards) -> None:
    """Stop the readers, unpin and free the block. Safe to call twice (weakref.finalize)."""
    for worker in workers:
        worker.stop()
    workers.clear()
    local_shards.close()
    if pinned is not None:
        try:
            import torch

            torch.cuda.synchronize()  # no copy out of the block may still be running
            torch.cuda.cudart().cudaHostUnregister(pinned)
        except Exception:  # noqa: BLE001 - the process is shutting down anyway
            pass
    try:
        shm.close()
    except BufferError:
        pass  # a view is still alive somewhere (e.g. while an exception unwinds); the unlink still frees the name
    try:
        shm.unlink()
    except FileNotFoundError:
        pass


# --- the reader process --------------------------------------------------------------------------


def attach_block(name: str, nbytes: int):
    """Map the main process's shared block (it owns it and unlinks it).

    Attaching through `SharedMemory(name)` would start a resource tracker in this process that
    unlinks the block when the reader exits (Python < 3.13), so the block is mapped directly.
    """
    fd = os.open(f"/dev/shm/{name.lstrip('/')}", os.O_RDWR)
    try:
        return mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)


def serve(conn: Connection) -> None:
    """A reader's life: the setup, then tasks until None or until the main process goes away."""
    try:
        setup: _Setup = conn.recv()
    except (EOFError, OSError):
        return
    views = block_views(setup.arrays, attach_block(setup.shm_name, setup.nbytes))
    shards = OpenShards()
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return  # the main process is gone; do not linger as an orphan
            if message is None:
                return
            task_id, task = message
            try:
                conn.send(_run_job(setup.job, shards, views, task_id, task))
            except (EOFError, OSError):
                return
    finally:
        shards.close()


if __name__ == "__main__":
    # argv[1]: the file descriptor of this reader's end of the socket pair. Served by the module
    # under its own name, not as __main__, so that the jobs' exceptions (ReadFailed) are its classes.
    from fgclip.reader_pool import serve as serve_tasks

    serve_tasks(Connection(socket.socket(fileno=int(sys.argv[1])).detach()))
