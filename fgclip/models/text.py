"""Captions to token ids: the tokenizer of a model directory, each family's text rules, caption keys.

Global (video) captions are long and use the long position table (FG-CLIP: 248 positions,
FG-CLIP 2: 196); region captions and hard negatives are box texts and prompts are short texts,
both on the original positions (CLIP: 77, SigLIP 2: 64). A family's `TextRules` says the
lengths and how captions are prepared; the model of each family carries its rules.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Sequence

import torch

LONG_TEXT_LENGTH = 248  # FG-CLIP's long-caption positions (global captions)
SHORT_TEXT_LENGTH = 77  # CLIP's original positions (region captions, hard negatives, prompts)

# The three text kinds of FG-CLIP 2 (CLIP treats "box" as "short"): long = global captions,
# box = region captions and their hard negatives, short = prompts.
TEXT_KINDS = ("long", "short", "box")


@dataclass(frozen=True)
class TextRules:
    """How one model family turns captions into token ids.

    `full_length`: the text tower pools at the last position (SigLIP 2: no causal mask), so
    captions are padded to the full length and the padding must stay; a CLIP tower pools at the
    end token, so padding after it may be cut. `lowercase`: captions are lower-cased before
    tokenising (FG-CLIP 2 was trained that way; CLIP's tokenizer lower-cases by itself)."""

    long_length: int
    short_length: int
    lowercase: bool = False
    full_length: bool = False

    def length(self, kind: str) -> int:
        if kind not in TEXT_KINDS:
            raise ValueError(f"unknown text kind {kind!r}; one of {', '.join(TEXT_KINDS)}")
        return self.long_length if kind == "long" else self.short_length

    def ids(self, tokenizer, texts: Sequence[str], kind: str) -> torch.Tensor:
        """(len(texts), length of `kind`) token ids following these rules (training captions)."""
        return self.ids_and_mask(tokenizer, texts, kind)[0]

    def ids_and_mask(self, tokenizer, texts: Sequence[str], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention_mask), both (len(texts), length of `kind`); the mask is the tokenizer's
        (1 = token, 0 = padding), what FG-CLIP 2's inference passes to its text tower."""
        texts = [text.lower() for text in texts] if self.lowercase else list(texts)
        return tokenize_with_mask(tokenizer, texts, self.length(kind))


CLIP_TEXT_RULES = TextRules(long_length=LONG_TEXT_LENGTH, short_length=SHORT_TEXT_LENGTH)


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
        # Released FG-CLIP directories name remote code in config.json's auto_map; the tokenizer
        # needs none of it, and without this transformers stops to ask whether to run it.
        return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"{model_dir}: no usable tokenizer files (tokenizer.json or vocab.json + merges.txt) ({err}). "
            f"A model directory needs its tokenizer; `fgclip-vad init-model` writes both."
        ) from err


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> torch.Tensor:
    """(len(texts), max_length) int64 ids, padded and truncated (the end-of-text token is kept)."""
    return tokenize_with_mask(tokenizer, texts, max_length)[0]


def tokenize_with_mask(tokenizer, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), both (len(texts), max_length) int64: padded and truncated as `tokenize`."""
    if len(texts) == 0:
        empty = torch.zeros((0, max_length), dtype=torch.long)
        return empty, empty.clone()
    encoded = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_attention_mask=True,
    )
    return encoded["input_ids"].long(), encoded["attention_mask"].long()


def caption_key(text: str) -> int:
    """A stable 63-bit key of a caption: equal keys mean the same sentence.

    The losses treat samples with equal keys as positives of each other (many normal clips
    share one caption), and the keys travel across GPUs as plain integers.
    """
    normalised = " ".join(text.strip().lower().split())
    digest = hashlib.blake2b(normalised.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
