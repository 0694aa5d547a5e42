"""Comparing shard directories dataset by dataset: what "identical shards" means in the tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pipeline.shards import read_manifest


def shard_contents(path: Path) -> dict:
    """Every attribute and dataset of one shard file, strings decoded."""
    with h5py.File(path, "r") as f:
        contents = {f"attr:{k}": f.attrs[k] for k in f.attrs}
        for name, dataset in f.items():
            contents[name] = dataset.asstr()[()] if dataset.dtype.kind == "O" else dataset[()]
    return contents


def assert_same_shard_dirs(a: Path, b: Path) -> None:
    """The same shard files with equal contents, and the same manifest but for its times and source path."""
    files_a = sorted(p.name for p in a.glob("*.h5"))
    assert files_a == sorted(p.name for p in b.glob("*.h5")) and files_a
    for name in files_a:
        ca, cb = shard_contents(a / name), shard_contents(b / name)
        assert ca.keys() == cb.keys()
        for key in ca:
            np.testing.assert_array_equal(ca[key], cb[key], err_msg=f"{name}: {key}")
    ma, mb = read_manifest(a), read_manifest(b)
    for volatile in ("created", "updated", "source"):
        ma.pop(volatile), mb.pop(volatile)
    assert ma == mb
