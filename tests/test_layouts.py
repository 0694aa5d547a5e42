"""FG-CLIP v1 directories in, FG-CLIP v1 and plain CLIP directories out, checkpoints of format 1,
and fg-clip-large's shape (336 px, patch 14, a 24x24 grid) through training and evaluation.

The references are computed from the weights files with transformers' own `CLIPTextModel`, by
FG-CLIP v1's rules (long: rows 0..19 of `ori`, 20..247 of `res`, `text_filip_projection`, pooled
at the first token 49407; short: the 77 rows and `text_projection`), not with fgclip's code.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from transformers import CLIPModel, CLIPTextConfig, CLIPTextModel

from fgclip.cli import main as cli
from fgclip.train.doctor import check_model
from fgclip.models.clip_video import FGCLIPVideo, ModelDirError
from fgclip.models.text import LONG_TEXT_LENGTH, SHORT_TEXT_LENGTH, load_tokenizer, tokenize
from layout_dirs import V1_SCALES, changed_copy, read_safetensors, write_fgclip_v1_dir, write_format1_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPTIONS = [
    "A man in a black shirt punches another man near the door of the shop.",
    # > 77 tokens: only the long table holds it
    " ".join(["A woman in a red coat walks past a parked white car while two men argue loudly behind her,"] * 5),
    "Smoke.",
]
FGCLIP_V1_EOS = 49407  # FG-CLIP v1 pools at the first end token, whatever config.json says (2)


@pytest.fixture(scope="module")
def real_files(shared_data):
    return shared_data / "models" / "fg-clip-base-files"


@pytest.fixture(scope="module")
def v1_dir(real_files, tmp_path_factory):
    return write_fgclip_v1_dir(tmp_path_factory.mktemp("fgclip_v1") / "fg-clip-tiny", real_files)


def reference_text(weights: dict, text_config: dict, ids: torch.Tensor, *, positions: torch.Tensor,
                   projection: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """transformers' CLIPTextModel with `positions` as its position table, then `projection`."""
    config = CLIPTextConfig.from_dict({**text_config, "max_position_embeddings": positions.shape[0],
                                       "eos_token_id": eos_token_id})
    model = CLIPTextModel(config).eval()
    prefix = "text_model."
    state = {key[len(prefix):]: value for key, value in weights.items()
             if key.startswith(prefix) and not key.startswith(prefix + "embeddings.position_embedding")}
    state["embeddings.position_embedding.weight"] = positions
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        pooled = model(input_ids=ids).pooler_output
    return F.normalize(pooled @ projection.t(), dim=-1)


def test_fgclip_v1_captions_equal_fgclip_v1_computed_with_transformers(v1_dir, caplog, capfd):
    with caplog.at_level(logging.INFO):
        model = FGCLIPVideo.from_pretrained(v1_dir).eval()
    # No load report or other transformers message reaches the user.
    assert not [r for r in caplog.records if r.name.startswith("transformers")], caplog.text
    assert capfd.readouterr().err == ""
    assert model.source_layout == "fgclip-v1"

    weights = read_safetensors(v1_dir / "model.safetensors")
    text_config = json.loads((v1_dir / "config.json").read_text())["text_config"]
    tokenizer = load_tokenizer(v1_dir)
    long_ids = tokenize(tokenizer, CAPTIONS, LONG_TEXT_LENGTH)
    short_ids = tokenize(tokenizer, CAPTIONS, SHORT_TEXT_LENGTH)
    assert (long_ids[1] == FGCLIP_V1_EOS).nonzero()[0, 0] > 100  # the long caption really is long
    ori = weights["text_model.embeddings.position_embedding_ori.weight"]
    res = weights["text_model.embeddings.position_embedding_res.weight"]
    long_expected = reference_text(weights, text_config, long_ids, positions=torch.cat([ori[:20], res[20:]]),
                                   projection=weights["text_filip_projection.weight"], eos_token_id=FGCLIP_V1_EOS)
    short_expected = reference_text(weights, text_config, short_ids,
                                    positions=weights["text_model.embeddings.position_embedding.weight"],
                                    projection=weights["text_projection.weight"], eos_token_id=FGCLIP_V1_EOS)
    with torch.no_grad():
        long, short = model.encode_text(long_ids, "long"), model.encode_text(short_ids, "short")
    torch.testing.assert_close(long, long_expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(short, short_expected, rtol=0, atol=1e-5)
    assert (long[0] @ short[0]).abs() < 0.9  # separate tables and projections: not the same embedding


def test_fgclip_v1_temperatures_are_mapped(v1_dir):
    temperatures = FGCLIPVideo.from_pretrained(v1_dir).temperatures()
    for ours, theirs in (("global", "logit_scale"), ("region", "logit_scale_finegraind"), ("hard", "logit_scale_hardneg")):
        assert float(temperatures[ours].detach()) == pytest.approx(torch.tensor(V1_SCALES[theirs]).exp().item(), rel=1e-6), ours


def test_unused_or_missing_fgclip_tensors_are_refused_by_name(v1_dir, tmp_path):
    stray = "text_model.embeddings.position_embedding_extra.weight"
    extra = changed_copy(v1_dir, tmp_path / "extra", extra={stray: torch.zeros(8, 32), "box_head.weight": torch.zeros(2, 2)})
    with pytest.raises(ModelDirError, match="2 tensors this model would not use") as refused:
        FGCLIPVideo.from_pretrained(extra)
    assert stray in str(refused.value) and "box_head.weight" in str(refused.value)
    verdict = check_model(extra)  # doctor says the same
    assert verdict.status == "FAIL" and stray in verdict.detail

    partial = changed_copy(v1_dir, tmp_path / "partial", drop=("logit_scale_hardneg",))
    with pytest.raises(ModelDirError, match="without logit_scale_hardneg"):
        FGCLIPVideo.from_pretrained(partial)


def test_doctor_names_the_layout(v1_dir, model_dir, tmp_path):
    assert "layout fgclip-v1: FG-CLIP v1" in check_model(v1_dir).detail
    assert "layout clip: plain CLIP" in check_model(model_dir).detail
    FGCLIPVideo.from_pretrained(model_dir).save_pretrained(tmp_path / "ours")
    assert "layout fgclip-vad" in check_model(tmp_path / "ours").detail


def test_export_round_trips_exactly(v1_dir, tmp_path):
    model = FGCLIPVideo.from_pretrained(v1_dir)
    with torch.no_grad():  # a fine-tuned temporal module, which FG-CLIP has no place for
        for parameter in model.temporal.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path / "checkpoint")

    result = CliRunner().invoke(cli, ["export-model", str(tmp_path / "checkpoint"), "--format", "fgclip",
                                      "--out", str(tmp_path / "fgclip")])
    assert result.exit_code == 0, result.output
    source, exported = read_safetensors(v1_dir / "model.safetensors"), read_safetensors(tmp_path / "fgclip" / "model.safetensors")
    assert sorted(exported) == sorted(source)
    for key, value in source.items():
        assert exported[key].shape == value.shape, key
        assert (exported[key] - value).abs().max() <= 1e-6, key
    config = json.loads((tmp_path / "fgclip" / "config.json").read_text())
    assert config["architectures"] == ["FGCLIPModel"] and config["model_type"] == "clip"
    assert config["auto_map"] == json.loads((v1_dir / "config.json").read_text())["auto_map"]  # as downloaded
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "preprocessor_config.json"):
        assert (tmp_path / "fgclip" / name).read_bytes() == (v1_dir / name).read_bytes(), name

    back = FGCLIPVideo.from_pretrained(tmp_path / "fgclip").eval()
    assert back.source_layout == "fgclip-v1+fgclip-vad"
    model.eval()
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    ids = tokenize(load_tokenizer(tmp_path / "fgclip"), CAPTIONS, LONG_TEXT_LENGTH)
    pixels = torch.randn(1, 3, 3, back.image_size, back.image_size)
    boxes, mask = torch.tensor([0.1, 0.2, 0.6, 0.9]).expand(1, 1, 3, 4), torch.ones(1, 1, 3, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(back.encode_text(ids, "long"), model.encode_text(ids, "long"))
        assert torch.equal(back.encode_text(ids[:, :77], "short"), model.encode_text(ids[:, :77], "short"))
        first, second = model.encode_video(pixels, boxes, mask), back.encode_video(pixels, boxes, mask)
    for name in ("video_embeds", "frame_embeds", "region_embeds"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name

    plain = CliRunner().invoke(cli, ["export-model", str(tmp_path / "checkpoint"), "--format", "clip",
                                     "--out", str(tmp_path / "clip")])
    assert plain.exit_code == 0, plain.output
    for part in ("long-caption positions", "long-caption projection", "region temperature",
                 "hard-negative temperature", "temporal module"):
        assert part in plain.output, part
    assert "auto_map" not in json.loads((tmp_path / "clip" / "config.json").read_text())
    clip, info = CLIPModel.from_pretrained(str(tmp_path / "clip"), output_loading_info=True)
    assert not any(info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert float(clip.logit_scale.detach()) == pytest.approx(V1_SCALES["logit_scale"])
    assert FGCLIPVideo.from_pretrained(tmp_path / "clip").source_layout == "clip"
    again = CliRunner().invoke(cli, ["export-model", str(v1_dir), "--format", "clip", "--out", str(tmp_path / "clip")])
    assert again.exit_code != 0 and "already holds a model" in again.output


def test_fine_tuned_fgclip_v1_goes_back_with_the_rows_fgclip_does_not_read_unchanged(v1_dir, tmp_path):
    from fgclip.train.presets import resolve_config
    from fgclip.train.loop import Trainer, TrainingError
    from train_data import write_square_shards

    shards = write_square_shards(tmp_path / "shards", num_records=4, num_frames=2)
    config = resolve_config("demo", dict(shards=str(shards), model=str(v1_dir), output_dir=str(tmp_path / "run"),
                                         num_frames=2, batch_size=4, grad_accum=1, epochs=1, workers=0, save_every=100,
                                         lr=1e-3, text_lr=1e-3))
    summary = Trainer(config, show_progress=False).run()
    assert summary["reason"] == "complete" and summary["step"] == 1
    result = CliRunner().invoke(cli, ["export-model", str(tmp_path / "run"), "--format", "fgclip", "--out",
                                      str(tmp_path / "export")])  # a run's directory: its final model
    assert result.exit_code == 0 and f"from {summary['final']}" in result.output, result.output
    source, tuned = read_safetensors(v1_dir / "model.safetensors"), read_safetensors(tmp_path / "export" / "model.safetensors")
    assert sorted(tuned) == sorted(source)
    ori, res = "text_model.embeddings.position_embedding_ori.weight", "text_model.embeddings.position_embedding_res.weight"
    assert torch.equal(tuned[ori][20:], source[ori][20:]) and torch.equal(tuned[res][:20], source[res][:20])
    for key in (ori, "text_filip_projection.weight", "logit_scale", "logit_scale_finegraind",
                "text_model.encoder.layers.0.mlp.fc1.weight", "vision_model.encoder.layers.0.mlp.fc1.weight"):
        assert not torch.equal(tuned[key], source[key]), key  # trained

    # A run of a version with other parameters (before the long projection: one fewer) cannot resume.
    checkpoint = tmp_path / "run" / "checkpoint-1"
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    state["optimizer"]["param_groups"][0]["params"].pop()
    torch.save(state, checkpoint / "trainer_state.pt")
    with pytest.raises(TrainingError, match="optimizer state does not fit this model's parameters"):
        Trainer(config, resume=str(checkpoint), show_progress=False)


def test_checkpoint_of_format_1_still_loads(model_dir, tmp_path):
    """Format 1 (before FG-CLIP's long projection): one long table, long captions through
    text_projection. It loads as ori = res = that table, long projection = text_projection."""
    extras = write_format1_checkpoint(tmp_path / "old", model_dir)
    model = FGCLIPVideo.from_pretrained(tmp_path / "old").eval()
    assert model.source_layout == "fgclip-vad"
    table = extras["long_position_embedding"]
    assert torch.equal(model.long_positions.ori, table) and torch.equal(model.long_positions.res, table)
    assert torch.equal(model.long_text_projection.weight, model.clip.text_projection.weight)
    for name, value in model.temperatures().items():
        assert torch.equal(value, extras[f"logit_scales.{name}"].exp()), name
    for name, value in model.temporal.state_dict().items():
        assert torch.equal(value, extras[f"temporal.{name}"]), name

    weights = read_safetensors(tmp_path / "old" / "model.safetensors")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    ids = tokenize(load_tokenizer(tmp_path / "old"), CAPTIONS, LONG_TEXT_LENGTH)
    expected = reference_text(weights, config["text_config"], ids, positions=table,
                              projection=weights["text_projection.weight"],
                              eos_token_id=config["text_config"]["eos_token_id"])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(ids, "long"), expected, rtol=0, atol=1e-5)

    model.save_pretrained(tmp_path / "new")  # written again in the current format
    assert json.loads((tmp_path / "new" / "fgclip_video.json").read_text())["format_version"] == 2
    again = FGCLIPVideo.from_pretrained(tmp_path / "new")
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


# --- fg-clip-large's shape: ViT-L/14 at 336 px, a 24x24 patch grid ------------------------------------


def test_vit_l14_336_preset_is_fg_clip_large_shaped():
    from transformers.initialization import no_init_weights

    from fgclip.models.commands import MODEL_PRESETS
    from fgclip.models.factory import PRESETS, clip_config

    assert MODEL_PRESETS == list(PRESETS)
    config = clip_config(PRESETS["vit-l14-336"], vocab_size=49408, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407)
    vision, text = config.vision_config, config.text_config
    assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers) == (336, 14, 1024, 24)
    assert (text.hidden_size, config.projection_dim) == (768, 768)
    with torch.device("meta"), no_init_weights():  # shapes only: no 1.7 GB of random weights
        model = FGCLIPVideo(CLIPModel(config))
    assert (model.image_size, model.patch_grid, model.embed_dim) == (336, 24, 768)


@pytest.fixture(scope="module")
def model_336(tmp_path_factory):
    from train_data import write_micro_model

    return write_micro_model(tmp_path_factory.mktemp("model_336") / "model", image_size=336, patch_size=14)


def test_regions_of_a_336px_patch14_model_pool_its_24x24_grid(model_336):
    model = FGCLIPVideo.from_pretrained(model_336).eval()
    assert (model.image_size, model.patch_grid) == (336, 24)
    pixels = torch.randn(1, 2, 3, 336, 336, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([0.25, 0.5, 0.5, 0.75])  # columns 6..11, rows 12..17 of the grid
    with torch.no_grad():
        dense = model._dense_patch_features(model._vision_trunk(pixels[0]))
        region = model.encode_video(pixels, box.expand(1, 1, 2, 4), torch.ones(1, 1, 2, dtype=torch.bool)).region_embeds
    assert dense.shape[-2:] == (24, 24)
    expected = F.normalize(dense[:, :, 12:18, 6:12].mean(dim=(2, 3)).mean(dim=0), dim=-1)
    torch.testing.assert_close(region[0, 0], expected, rtol=0, atol=1e-5)


def test_a_336px_patch14_model_trains_a_step_and_evaluates_on_336px_stage1_shards(model_336, link_real_clips,
                                                                                   tmp_path):
    from fgclip.eval.evaluate import evaluate
    from fgclip.train.presets import resolve_config
    from fgclip.train.loop import Trainer
    from pipeline.shards import ShardReader, list_shards
    from train_data import write_square_shards

    shards = write_square_shards(tmp_path / "train", num_records=4, num_frames=4, size=336)
    config = resolve_config("demo", dict(shards=str(shards), model=str(model_336), output_dir=str(tmp_path / "run"),
                                         num_frames=2, batch_size=4, grad_accum=1, epochs=1, workers=0,
                                         save_every=100))
    summary = Trainer(config, show_progress=False).run()
    assert summary["reason"] == "complete" and summary["step"] == 1 and summary["skipped_steps"] == 0

    # Stage 1 at 336 px on real clips, then evaluation of the trained checkpoint on them.
    videos = link_real_clips(tmp_path / "videos", {"Abuse/Abuse901_x264.mp4": "vtest_campus_cctv.mp4",
                                                   "Testing_Normal_Videos_Anomaly/Normal_Videos901_x264.mp4": "car_traffic.mp4"})
    test_list = tmp_path / "Anomaly_Test.txt"
    test_list.write_text("Abuse/Abuse901_x264.mp4\nTesting_Normal_Videos_Anomaly/Normal_Videos901_x264.mp4\n")
    built = CliRunner().invoke(cli, ["frames", "--test-list", str(test_list), "--video-root", str(videos),
                                     "--out", str(tmp_path / "shards"), "--size", "336", "--workers", "1"])
    assert built.exit_code == 0, built.output
    test_shards = tmp_path / "shards" / "test_stride16"
    with ShardReader(list_shards(test_shards)[0]) as reader:
        assert (reader.attrs.height, reader.attrs.width) == (336, 336)
    annotations = tmp_path / "Temporal_Anomaly_Annotation.txt"
    annotations.write_text("Abuse901_x264.mp4  Abuse  100  400  -1  -1\n"
                           "Normal_Videos901_x264.mp4  Normal  -1  -1  -1  -1\n")
    report = evaluate([summary["final"]], test_shards, annotations, tmp_path / "eval", device="cpu", num_readers=0,
                      batch_frames=16, video_plots=False, progress=False)
    metrics = report["models"][0]["metrics"]
    assert not report["partial"] and metrics["auc"] is not None and metrics["num_frames"] > 1000
