"""Caption language: find non-English captions, export them for translation, apply translations.

CLIP's tokenizer is English BPE: Chinese text becomes a string of byte tokens the text encoder
never learned. The real annotation files mix English and Chinese (a whole class of one of them,
and one stray character in the other), so validation flags every caption written in another
script, and a translation file (JSON object: original caption -> English caption) fixes them
without editing the annotation file.

The rule is script-based, not a language model: a caption is non-English if it contains a
letter outside the Latin script (Han, kana, Hangul, Cyrillic, Greek, Arabic, ...). Accented
Latin letters ("café") and punctuation such as curly quotes pass. On the real files this marks
exactly the records that hold Chinese (1 and 159).
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from pathlib import Path


class TranslationFileError(ValueError):
    """A translation file that cannot be read or is not an object of strings."""


_SCRIPT_NAMES = {"CJK": "Chinese (Han)", "HIRAGANA": "Japanese", "KATAKANA": "Japanese", "HANGUL": "Korean"}

# Scripts each model family reads natively besides Latin: FG-CLIP 2 (the siglip2 family) is
# trained on English and Chinese, so Chinese captions need no translation there; CLIP's BPE is
# English only. `validate --model-family` chooses the row.
NATIVE_SCRIPTS = {"clip": (), "siglip2": ("Chinese (Han)",)}


def foreign_scripts(text: str) -> list[str]:
    """Names of the non-Latin scripts whose letters appear in `text` ("Chinese (Han)", "Cyrillic"...),
    most frequent first; empty for English text."""
    scripts: Counter[str] = Counter()
    for char in text:
        if char.isascii() or not unicodedata.category(char).startswith("L"):
            continue
        name = unicodedata.name(char, "")
        script = name.split(" ", 1)[0] if name else "UNKNOWN"
        if script != "LATIN":
            scripts[_SCRIPT_NAMES.get(script, script.title())] += 1
    return [script for script, _ in scripts.most_common()]


def is_english(text: str) -> bool:
    """True when every letter of `text` is Latin script (see the module docstring)."""
    return not foreign_scripts(text)


def load_translations(path: Path) -> dict[str, str]:
    """Read a translation file: a JSON object mapping original caption -> English caption.

    Entries with an empty value (not translated yet, as `export-captions` writes them) are
    left out, so the caption stays flagged.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TranslationFileError(f"translation file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TranslationFileError(f"translation file {path} is not readable JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise TranslationFileError(
            f"translation file {path}: expected a JSON object {{original: English}}, got {type(raw).__name__}"
        )
    translations: dict[str, str] = {}
    for original, english in raw.items():
        if not isinstance(english, str):
            raise TranslationFileError(
                f"translation file {path}: the value for {original!r} is {type(english).__name__}, expected a string"
            )
        if english.strip():
            translations[original] = english.strip()
    return translations


def translate(text: str, translations: dict[str, str] | None) -> str | None:
    """The English version of `text` from `translations` (exact match, then stripped), or None."""
    if not translations:
        return None
    english = translations.get(text)
    if english is None:
        english = translations.get(text.strip())
    return english if english else None


def record_texts(record: object) -> list[str]:
    """Every caption string of a raw JSON record: global, region and hard-negative captions."""
    if not isinstance(record, dict):
        return []
    texts: list[str] = []
    if isinstance(record.get("global_caption"), str):
        texts.append(record["global_caption"])
    for caption in record.get("region_captions") or []:
        if isinstance(caption, str):
            texts.append(caption)
    for negatives in record.get("hard_negatives") or []:
        for caption in negatives if isinstance(negatives, list) else []:
            if isinstance(caption, str):
                texts.append(caption)
    return texts


def untranslated_captions(raw_records: list, translations: dict[str, str] | None = None) -> dict[str, str]:
    """Every distinct non-English caption, in file order, mapped to its translation so far ("")."""
    todo: dict[str, str] = {}
    for record in raw_records:
        for text in record_texts(record):
            if text not in todo and not is_english(text):
                todo[text] = translate(text, translations) or ""
    return todo


def export_captions(annotation_path: Path, out_path: Path, translations: dict[str, str] | None = None) -> int:
    """Write the translation to-do file for `annotation_path`; returns how many captions it lists.

    Captions already translated in `translations` keep their English text, so the user can
    export again after filling part of the file without losing work.
    """
    annotation_path = Path(annotation_path)
    try:
        raw_records = json.loads(annotation_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"annotation file {annotation_path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"annotation file {annotation_path} is not readable JSON: {exc}") from None
    if not isinstance(raw_records, list):
        raise ValueError(f"annotation file {annotation_path}: top level must be a list of records")
    todo = untranslated_captions(raw_records, translations)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(todo, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return len(todo)
