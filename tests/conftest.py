"""Shared fixtures: where the real data lives, and small torch settings for 2-core CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from train_data import session_micro_model

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FGCLIP_SHARED", REPO_ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}; set FGCLIP_SHARED to the shared folder")
    return SHARED_DATA


@pytest.fixture(scope="session")
def link_real_clips(shared_data):
    """link(root, {name under root: real clip file name}) -> root: the shared real clips under
    UCF-Crime-like names, as symbolic links."""

    def link(root: Path, names: dict[str, str]) -> Path:
        for name, real in names.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).symlink_to(shared_data / "videos" / real)
        return root

    return link


@pytest.fixture(autouse=True, scope="session")
def _offline_and_small():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """2 shared cores: one intra-op thread is several times faster than two competing ones
    (modules that train use it: `pytestmark = pytest.mark.usefixtures("one_torch_thread")`)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """The micro FG-CLIP model directory (with tokenizer) shared by the training-side tests."""
    return session_micro_model(tmp_path_factory)
