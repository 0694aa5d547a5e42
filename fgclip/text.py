"""Captions to token ids: the tokenizer of a model directory, the two text lengths, caption keys.

Global (video) captions are long and use FG-CLIP's 248-position table; region captions and
hard negatives are short and use CLIP's original 77 positions.
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

import torch

LONG_TEXT_LENGTH = 248  # FG-CLIP's long-caption positions (global captions)
SHORT_TEXT_LENGTH = 77  # CLIP's original positions (region captions, hard negatives, prompts)


def load_tokenizer(model_dir: os.PathLike | str):
    """The CLIP tokenizer saved in `model_dir` (HF format), loaded without network access."""
    from pathlib import Path

    from transformers import AutoTokenizer

    folder = Path(model_dir)
    # Without its files transformers may build an empty tokenizer that maps every word to one id.
    if not (folder / "tokenizer.json").is_file() and not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        raise FileNotFoundError(
            f"{model_dir}: no tokenizer files (tokenizer.json, or vocab.json + merges.txt). "
            f"A model directory needs its tokenizer; `fgclip-vad init-model` writes both."
        )
    try:
        return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"{model_dir}: no usable tokenizer files (tokenizer.json or vocab.json + merges.txt) ({err}). "
            f"A model directory needs its tokenizer; `fgclip-vad init-model` writes both."
        ) from err


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> torch.Tensor:
    """(len(texts), max_length) int64 ids, padded and truncated (the end-of-text token is kept)."""
    if len(texts) == 0:
        return torch.zeros((0, max_length), dtype=torch.long)
    encoded = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return encoded["input_ids"].long()


def caption_key(text: str) -> int:
    """A stable 63-bit key of a caption: equal keys mean the same sentence.

    The losses treat samples with equal keys as positives of each other (many normal clips
    share one caption), and the keys travel across GPUs as plain integers.
    """
    normalised = " ".join(text.strip().lower().split())
    digest = hashlib.blake2b(normalised.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
