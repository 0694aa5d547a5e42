"""Caption language rule and translation files."""

from __future__ import annotations

import json

import pytest

from pipeline.captions import (
    TranslationFileError,
    foreign_scripts,
    is_english,
    load_translations,
    translate,
    untranslated_captions,
)


@pytest.mark.parametrize("text", [
    "A man in white stole a woman's red cloth.",
    "He left the café “quickly” — 3 times, 100% sure…",
    "",
    "Naïve señor at the façade",
])
def test_english_and_latin_text_passes(text):
    assert is_english(text)


@pytest.mark.parametrize("text, script", [
    ("Abuse 异常视频:一个女人虐待小孩。", "Chinese (Han)"),
    ("A man in a baseball帽", "Chinese (Han)"),
    ("Он бьёт женщину", "Cyrillic"),
    ("男がかばんを盗む", "Japanese"),
    ("かばんをぬすむ", "Japanese"),
    ("남자가 가방을 훔친다", "Korean"),
    ("رجل يسرق حقيبة", "Arabic"),
])
def test_other_scripts_are_flagged(text, script):
    assert not is_english(text)
    assert foreign_scripts(text)[0] == script


def test_load_translations(tmp_path):
    path = tmp_path / "tr.json"
    path.write_text(json.dumps({"一个人": "a person", "两个人": "", "车": " a car "}, ensure_ascii=False), encoding="utf-8")
    translations = load_translations(path)
    assert translations == {"一个人": "a person", "车": "a car"}  # empty = not done yet
    assert translate("一个人", translations) == "a person"
    assert translate(" 一个人 ", translations) == "a person"
    assert translate("两个人", translations) is None
    path.write_text('{"a": 3}')
    with pytest.raises(TranslationFileError, match="expected a string"):
        load_translations(path)
    with pytest.raises(TranslationFileError, match="not found"):
        load_translations(tmp_path / "missing.json")


def test_untranslated_captions_in_file_order():
    records = [
        {"global_caption": "车", "region_captions": ["A man.", "一个人"], "hard_negatives": [[], ["两个人"]]},
        {"global_caption": "车", "region_captions": []},
        "not a record",
    ]
    assert untranslated_captions(records, {"一个人": "a person"}) == {"车": "", "一个人": "a person", "两个人": ""}
