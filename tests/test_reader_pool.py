"""The reader pool that training and evaluation share: results, failures and dead readers, in
reader processes and in-process alike."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from fgclip.reader_pool import ReaderPool, ReadFailed

ARRAYS = [("rows", (4, 3), np.dtype(np.int64)), ("flags", (4,), np.dtype(np.bool_))]


class FillJob:
    """Task (slot, value): fills the slot's row with value and returns the reader's pid; value < 0 fails."""

    def __call__(self, shards, views, task):
        slot, value = task
        if value < 0:
            raise ValueError(f"value {value} is negative")
        views["rows"][slot] = value
        views["flags"][slot] = True
        return os.getpid()


@pytest.mark.parametrize("num_readers", [2, 0])
def test_results_land_in_the_shared_block(num_readers):
    with ReaderPool(ARRAYS, FillJob(), num_readers=num_readers, what="test reader") as pool:
        for slot in range(4):
            pool.submit(("task", slot), (slot, 10 + slot))
        results = dict(pool.next_result() for _ in range(4))
        assert set(results) == {("task", slot) for slot in range(4)}
        assert pool.views["rows"].tolist() == [[10] * 3, [11] * 3, [12] * 3, [13] * 3]
        assert pool.views["flags"].all()
        readers = set(results.values())
        assert readers == ({os.getpid()} if num_readers == 0 else {w.proc.pid for w in pool.workers})

        pool.submit("bad", (0, -1))
        with pytest.raises(ReadFailed, match="value -1 is negative"):
            pool.next_result()
        with pytest.raises(RuntimeError, match="no read is pending"):
            pool.next_result()


def test_a_dead_reader_is_named_with_the_advice():
    with ReaderPool(ARRAYS, FillJob(), num_readers=1, what="test reader", advice="try fewer readers",
                    poll_s=0.1) as pool:
        os.kill(pool.workers[0].proc.pid, signal.SIGKILL)
        pool.workers[0].proc.wait(timeout=10)
        with pytest.raises(RuntimeError, match=r"test reader.*died \(exit code -9\).*try fewer readers"):
            pool.submit("late", (0, 1))
            pool.next_result()
