"""Released and user-trained checkpoints of both families, exactly (issue 27).

The FG-CLIP 2 directories and the reference forward come from `fgclip2_reference` (written from
FG-CLIP 2's published code, without fgclip's model code): each variant a user really has (plain,
sharded with an index, saved by FG-CLIP 2's trainer with its two extra scalars, a global scale
of 118) loads through the family interface and embeds as FG-CLIP 2 does; scales are used unclamped;
prompts follow FG-CLIP 2's inference path, training captions its training path; exports keep the
shards, the trainer scalars, every tokenizer file and the remote code that `auto_map` names.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from fgclip.eval.prompts import prompt_embeddings, prompt_logits
from fgclip.models.clip_video import FGCLIPVideo, ModelDirError
from fgclip.models.dir_files import INDEX_NAME, read_safetensors_weights
from fgclip.models.export import export_model
from fgclip.models.families import load_model_and_tokenizer
from fgclip.models.siglip2_video import FGCLIP2Video
from fgclip2_reference import (AUTO_MAP, REMOTE_CODE, SENTENCEPIECE_STAND_IN, ReferenceFGCLIP2, TinyShape, cosine,
                               write_fgclip2_dir, write_sharded)
from layout_dirs import read_safetensors, write_fgclip_v1_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = TinyShape()
MIN_COSINE = 0.9999
TRAINER_SCALARS = (math.log(30.0), math.log(7.0))
VARIANTS = {
    "plain": {},
    "sharded": {"shards": 3},
    "trainer": {"trainer_scalars": TRAINER_SCALARS},
    # train_fgclip2.py casts the model to bf16 before training and saves it so
    "trainer_bf16": {"trainer_scalars": TRAINER_SCALARS, "dtype": torch.bfloat16},
    "scale118": {"logit_scale": math.log(118.0)},
}
CAPTIONS = ["A man in a black shirt walks across the street", "Two men punch and kick each other",
            "一个红色的人向左走"]
LONG_CAPTION = " ".join(["a person is setting fire to a building at night while a car drives past"] * 3)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """variant -> (directory, every tensor written)."""
    root = tmp_path_factory.mktemp("fgclip2_release")
    return {name: (root / name, write_fgclip2_dir(root / name, seed=index, **options))
            for index, (name, options) in enumerate(VARIANTS.items())}


def _assert_close_rows(ours: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    similarity = cosine(ours, reference)
    assert float(similarity.min()) >= MIN_COSINE, f"{what}: cosine {similarity.tolist()}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_released_layouts_embed_as_fgclip2_does(release, variant):
    path, tensors = release[variant]
    model, tokenizer = load_model_and_tokenizer(path)
    assert isinstance(model, FGCLIP2Video) and model.source_layout == "fgclip2"
    model = model.eval()
    reference = ReferenceFGCLIP2(tensors, SHAPE)
    rules = model.text_rules
    assert (rules.short_length, rules.long_length) == (SHAPE.text_positions, SHAPE.longtext_len)
    short_ids = rules.ids(tokenizer, CAPTIONS, "short")
    long_ids = rules.ids(tokenizer, [LONG_CAPTION, CAPTIONS[0]], "long")
    pixels = torch.randn(3, 3, SHAPE.image_size, SHAPE.image_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        # training captions: FG-CLIP 2's training path (ids only)
        for kind, ids in (("short", short_ids), ("box", short_ids), ("long", long_ids)):
            _assert_close_rows(model.encode_text(ids, kind), reference.text_features(ids, kind), f"{variant} {kind} text")
        _assert_close_rows(model.encode_frames(pixels), reference.image_features(pixels), f"{variant} image")
        dense = model.dense_features(pixels).flatten(2).transpose(1, 2)
        _assert_close_rows(dense, reference.dense_features(pixels), f"{variant} dense")

    # Scales as stored: exp(logit_scale) with no cap; region/hard = the trainer's scalars when saved.
    temperatures = {name: float(value.detach()) for name, value in model.temperatures().items()}
    global_scale = math.exp(float(tensors["logit_scale"]))
    assert temperatures["global"] == pytest.approx(global_scale, rel=1e-6)
    trained = variant.startswith("trainer")
    expected = ([math.exp(float(tensors[name])) for name in ("logit_scale_finegraind", "logit_scale_hardneg")]
                if trained else [global_scale] * 2)
    assert [temperatures["region"], temperatures["hard"]] == pytest.approx(expected, rel=1e-6)
    if variant == "scale118":
        assert temperatures["global"] == pytest.approx(118.0, rel=1e-6)


def test_scale_above_100_scores_and_trains_unclamped(release):
    """FG-CLIP 2's logits (cosine x exp(scale) + bias) at a scale of 118, and a gradient for the scale."""
    path, tensors = release["scale118"]
    model, tokenizer = load_model_and_tokenizer(path)
    reference = ReferenceFGCLIP2(tensors, SHAPE)
    pixels = torch.randn(2, 3, SHAPE.image_size, SHAPE.image_size, generator=torch.Generator().manual_seed(2))
    template = ("a photo of {}.",)
    prompts = prompt_embeddings(model.eval(), tokenizer, ["Fighting"], device=torch.device("cpu"), templates=template)
    ids, mask = model.text_rules.ids_and_mask(tokenizer, ["a photo of normal activity.", "a photo of fighting."], "short")
    with torch.no_grad():
        logits = prompt_logits(model.encode_frames(pixels), prompts, model.temperatures()["global"]) + model.logit_bias
        expected = reference.logits(reference.image_features(pixels), reference.text_features(ids, "short", mask))
    torch.testing.assert_close(logits.double(), expected, rtol=1e-4, atol=1e-3)

    model.train()
    (model.temperatures()["global"] * 1.0).backward()
    assert float(model.logit_scale.grad.abs().sum()) > 0  # a clamp at 100 would leave it 0


def test_prompts_take_the_inference_path_and_captions_the_training_path(release):
    path, tensors = release["plain"]
    model, tokenizer = load_model_and_tokenizer(path)
    reference = ReferenceFGCLIP2(tensors, SHAPE)
    templates = ("a video frame of {}.", "a photo of {}.")
    classes = ["Fighting", "RoadAccidents"]
    prompts = prompt_embeddings(model.eval(), tokenizer, classes, device=torch.device("cpu"), templates=templates)
    rows = [[template.format(phrase) for template in templates] for phrase in ("normal activity", "fighting", "road accidents")]
    ids, mask = model.text_rules.ids_and_mask(tokenizer, [s for row in rows for s in row], "short")
    assert int(mask.sum()) < mask.numel()  # padding is there, so the two paths differ

    def averaged(features: torch.Tensor) -> torch.Tensor:
        normalised = torch.nn.functional.normalize(features, dim=-1).view(len(rows), len(templates), -1)
        return torch.nn.functional.normalize(normalised.mean(dim=1), dim=-1)

    inference = averaged(reference.text_features(ids, "short", mask))
    training = averaged(reference.text_features(ids, "short"))
    _assert_close_rows(prompts, inference, "prompts (inference path)")
    assert float(cosine(prompts, training).min()) < 0.999  # not the training path
    with torch.no_grad():  # captions: without the mask, as FG-CLIP 2's trainer encodes them
        _assert_close_rows(model.encode_text(ids, "box"), reference.text_features(ids, "box"), "box captions")


def test_trainer_scalars_are_written_back_by_export(release, tmp_path):
    path, tensors = release["trainer"]
    checkpoint = tmp_path / "checkpoint"
    FGCLIP2Video.from_pretrained(path).save_pretrained(checkpoint)  # a checkpoint of ours, as training writes
    for source in (path, checkpoint):
        out = tmp_path / f"export-{source.name}"
        summary = export_model(source, out, "fgclip2")
        exported, _ = read_safetensors_weights(out)
        assert set(exported) == set(tensors), set(exported) ^ set(tensors)
        for name, value in tensors.items():
            assert torch.equal(exported[name], value), name
        assert "region/hard biases" in summary.beside_parts  # the scales are FG-CLIP 2's own tensors now
        again = FGCLIP2Video.from_pretrained(out)
        assert float(again.temperatures()["region"].detach()) == pytest.approx(30.0, rel=1e-6)

    # one scalar without the other, or a tensor of nobody's, is refused by name
    for extra, word in (({"logit_scale_finegraind": torch.tensor(1.0)}, "logit_scale_hardneg"),
                        ({"logit_scale_region": torch.tensor(1.0)}, "logit_scale_region")):
        broken = tmp_path / word
        write_fgclip2_dir(broken)
        weights = read_safetensors(broken / "model.safetensors")
        weights.update(extra)
        from safetensors.torch import save_file
        save_file(weights, str(broken / "model.safetensors"))
        with pytest.raises(ModelDirError, match=word):
            FGCLIP2Video.from_pretrained(broken)


def test_sharded_fgclip2_exports_with_its_shards_and_a_missing_shard_is_named(release, tmp_path):
    path, tensors = release["sharded"]
    index = json.loads((path / INDEX_NAME).read_text())
    summary = export_model(path, tmp_path / "export", "fgclip2")
    exported_index = json.loads((tmp_path / "export" / INDEX_NAME).read_text())
    assert exported_index["weight_map"] == index["weight_map"]
    assert summary.weight_files == [*sorted(set(index["weight_map"].values())), INDEX_NAME]
    for file in set(index["weight_map"].values()):
        ours, theirs = load_file(str(tmp_path / "export" / file)), load_file(str(path / file))
        assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in theirs), file

    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    (broken / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(ModelDirError, match="model-00002-of-00003.safetensors"):
        FGCLIP2Video.from_pretrained(broken)


def test_export_writes_every_remote_code_and_tokenizer_file(release, tmp_path):
    path, _ = release["plain"]
    out = tmp_path / "export"
    summary = export_model(path, out, "fgclip2")
    for name, source in REMOTE_CODE.items():
        assert (out / name).read_text() == source, name
    assert summary.remote_code == sorted(REMOTE_CODE) and summary.remote_code_missing == []
    assert (out / "tokenizer.model").read_bytes() == SENTENCEPIECE_STAND_IN
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                 "preprocessor_config.json"):
        assert (out / name).read_bytes() == (path / name).read_bytes(), name
        assert name in summary.side_files
    assert json.loads((out / "config.json").read_text())["auto_map"] == AUTO_MAP
    assert any("modeling_fgclip2.py" in line for line in summary.lines())


@pytest.fixture(scope="module")
def sharded_v1(shared_data, tmp_path_factory):
    """A tiny FG-CLIP v1 directory (fg-clip-base's real config and tokenizer) with its weights in 2 shards."""
    root = tmp_path_factory.mktemp("v1_sharded")
    single = write_fgclip_v1_dir(root / "single", shared_data / "models" / "fg-clip-base-files")
    sharded = root / "sharded"
    shutil.copytree(single, sharded)
    (sharded / "model.safetensors").unlink()
    write_sharded(sharded, read_safetensors(single / "model.safetensors"), 2)
    return single, sharded


def test_fgclip_v1_sharded_in_two_files_loads_and_exports_back_unchanged(sharded_v1, tmp_path):
    single, sharded = sharded_v1
    model = FGCLIPVideo.from_pretrained(sharded)
    reference = FGCLIPVideo.from_pretrained(single).state_dict()
    for name, value in model.state_dict().items():
        if not name.startswith("temporal."):  # the temporal module is new (random) in both
            assert torch.equal(value, reference[name]), name

    out = tmp_path / "export"
    summary = export_model(sharded, out, "fgclip")
    source_index = json.loads((sharded / INDEX_NAME).read_text())["weight_map"]
    assert json.loads((out / INDEX_NAME).read_text())["weight_map"] == source_index
    assert summary.weight_files == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", INDEX_NAME]
    for file in set(source_index.values()):
        ours, theirs = load_file(str(out / file)), load_file(str(sharded / file))
        assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in theirs), file
    # a checkpoint of ours that started from it exports in the release's shards too
    model.save_pretrained(tmp_path / "checkpoint")
    export_model(tmp_path / "checkpoint", tmp_path / "from_checkpoint", "fgclip")
    assert json.loads((tmp_path / "from_checkpoint" / INDEX_NAME).read_text())["weight_map"] == source_index
    # fg-clip-base's auto_map names modeling_fgclip.py, which the repository files lack: listed, not invented
    assert summary.remote_code_missing == ["modeling_fgclip.py"] and not (out / "modeling_fgclip.py").exists()

    broken = tmp_path / "broken"
    shutil.copytree(sharded, broken)
    (broken / "model-00001-of-00002.safetensors").unlink()
    with pytest.raises(ModelDirError, match="model-00001-of-00002.safetensors"):
        FGCLIPVideo.from_pretrained(broken)


def test_fgclip_v1_export_carries_its_remote_code(sharded_v1, tmp_path):
    single, _ = sharded_v1
    source = tmp_path / "with_code"
    shutil.copytree(single, source)
    (source / "modeling_fgclip.py").write_text("# stand-in for FG-CLIP's modeling_fgclip.py (test fixture)\n")
    summary = export_model(source, tmp_path / "fgclip", "fgclip")
    assert (tmp_path / "fgclip" / "modeling_fgclip.py").read_bytes() == (source / "modeling_fgclip.py").read_bytes()
    assert summary.remote_code == ["modeling_fgclip.py"]
    assert json.loads((tmp_path / "fgclip" / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"] == \
        "modeling_fgclip.FGCLIPModel"
    plain = export_model(source, tmp_path / "clip", "clip")  # a plain CLIP has no remote code
    assert plain.remote_code == [] and not (tmp_path / "clip" / "modeling_fgclip.py").exists()


def test_bench_presets_have_the_released_shapes():
    """`bench --model-preset fgclip2-base / fg-clip-base / fg-clip-large`: the configs init-model writes
    (checked without building the models: fgclip2-base's token table alone is 256,000 x 768)."""
    from fgclip.models.commands import MODEL_PRESETS
    from fgclip.models.factory import PRESETS, clip_config, siglip2_config

    assert {"fgclip2-base", "fg-clip-base", "fg-clip-large"} <= set(MODEL_PRESETS)
    fgclip2 = PRESETS["fgclip2-base"]
    config = siglip2_config(fgclip2, vocab_size=fgclip2.token_rows, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    vision, text = config.vision_config, config.text_config
    assert (fgclip2.image_size, vision.patch_size, vision.num_patches) == (256, 16, 256)
    assert (text.vocab_size, text.max_position_embeddings, 4 * text.max_position_embeddings - 60) == (256000, 64, 196)
    assert vision.hidden_size == text.hidden_size == text.projection_size == 768
    for name, (size, patch, layers) in {"fg-clip-base": (224, 16, 12), "fg-clip-large": (336, 14, 24)}.items():
        preset = PRESETS[name]
        clip = clip_config(preset, vocab_size=preset.token_rows, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
        assert (clip.vision_config.image_size, clip.vision_config.patch_size, clip.vision_config.num_hidden_layers,
                clip.text_config.vocab_size) == (size, patch, layers, 49408), name
