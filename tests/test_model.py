"""The FG-CLIP video model on real (tiny) transformers CLIP models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from transformers import AutoTokenizer, CLIPModel

from fgclip.cli import main as cli
from fgclip.models.clip_video import FGCLIPVideo, ModelDirError, long_position_table
from fgclip.models.factory import init_model, train_tokenizer
from fgclip.models.text import LONG_TEXT_LENGTH, SHORT_TEXT_LENGTH, load_tokenizer, tokenize
from tiny_fgclip import IMAGE_SIZE, random_ids, tiny_clip_config, tiny_model

CAPTIONS = [
    "A man in a black shirt punches another man near the door.",
    "Two people walk across an empty parking lot at night.",
    "A car crashes into a wall and smoke rises from the engine.",
]


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory) -> Path:
    """A directory written by transformers itself: CLIPModel.save_pretrained + a tokenizer."""
    path = tmp_path_factory.mktemp("hf_clip")
    tokenizer = train_tokenizer(CAPTIONS * 3, vocab_size=300)
    config = tiny_clip_config()
    config.text_config.vocab_size = len(tokenizer)
    config.text_config.eos_token_id = tokenizer.eos_token_id
    config.text_config.bos_token_id = tokenizer.bos_token_id
    config.text_config.pad_token_id = tokenizer.pad_token_id
    CLIPModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def test_long_position_table_rule():
    short = torch.randn(SHORT_TEXT_LENGTH, 8, dtype=torch.float64)
    long = long_position_table(short)
    assert long.shape == (LONG_TEXT_LENGTH, 8)
    assert torch.equal(long[:20], short[:20])
    for i in range(20, 76):  # rows 20..75: 4 rows each, interpolating toward row i + 1
        for j in range(4):
            expected = (1 - j / 4) * short[i] + (j / 4) * short[i + 1]
            torch.testing.assert_close(long[20 + 4 * (i - 20) + j], expected, rtol=0, atol=1e-14)
    for j in range(4):  # row 76 has no next row: extrapolated along its last step
        torch.testing.assert_close(long[244 + j], short[76] + (j / 4) * (short[76] - short[75]), rtol=0, atol=1e-14)
    assert torch.equal(long[20 + 4 * 7], short[27])  # every source row reappears at j = 0


def test_short_text_equals_transformers_get_text_features():
    model = tiny_model(dtype=torch.float32).eval()
    ids = random_ids(torch.Generator().manual_seed(0), (5,), SHORT_TEXT_LENGTH)
    with torch.no_grad():
        ours = model.encode_text(ids, "short")
        theirs = F.normalize(model.clip.get_text_features(input_ids=ids).pooler_output, dim=-1)
    assert torch.equal(ours, theirs)


def test_long_text_uses_the_long_table():
    model = tiny_model().eval()
    ids = random_ids(torch.Generator().manual_seed(1), (3,), LONG_TEXT_LENGTH)
    ids[:, 30:60] = 5  # a caption longer than 77 tokens: end token near position 200
    ids[:, 60:200] = 7
    ids[:, 200] = model.clip.config.text_config.eos_token_id
    with torch.no_grad():
        long = model.encode_text(ids, "long")
        assert long.shape == (3, model.embed_dim)
        assert torch.allclose(long.norm(dim=-1), torch.ones(3, dtype=long.dtype))
        with pytest.raises(ValueError, match="exceed the short position table"):
            model.encode_text(ids, "short")
        # The first 20 positions are shared: a short caption gives the same embedding either way.
        short_ids = random_ids(torch.Generator().manual_seed(2), (2,), 20)
        torch.testing.assert_close(model.encode_text(short_ids, "long"), model.encode_text(short_ids, "short"))


def test_frame_embeddings_equal_clip_image_features():
    model = tiny_model().eval()
    pixels = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float64)
    with torch.no_grad():
        theirs = F.normalize(model.clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        torch.testing.assert_close(model.encode_frames(pixels), theirs, rtol=1e-12, atol=1e-12)


def test_video_embedding_is_the_mean_of_frames_at_initialisation():
    model = tiny_model().eval()
    pixels = torch.randn(2, 5, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float64)
    boxes = torch.tensor([0.1, 0.2, 0.7, 0.9], dtype=torch.float64).expand(2, 1, 5, 4)
    with torch.no_grad():
        out = model.encode_video(pixels, boxes, torch.ones(2, 1, 5, dtype=torch.bool))
    expected = F.normalize(out.frame_embeds.mean(dim=1), dim=-1)
    torch.testing.assert_close(out.video_embeds, expected, rtol=1e-12, atol=1e-12)
    # ... and the temporal module is not a constant: once trained, it differs from the mean.
    perturbed = tiny_model(perturb_temporal=True).eval()
    with torch.no_grad():
        moved = perturbed.encode_video(pixels, boxes, torch.ones(2, 1, 5, dtype=torch.bool)).video_embeds
    assert (moved - expected).abs().max() > 1e-4


def test_whole_frame_box_gives_the_mean_of_dense_features():
    model = tiny_model().eval()
    pixels = torch.randn(1, 3, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float64)
    boxes = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64).expand(1, 1, 3, 4)
    with torch.no_grad():
        out = model.encode_video(pixels, boxes, torch.ones(1, 1, 3, dtype=torch.bool))
        dense = model._dense_patch_features(model._vision_trunk(pixels[0]))  # (T, D, g, g)
    expected = F.normalize(dense.mean(dim=(2, 3)).mean(dim=0), dim=-1)
    torch.testing.assert_close(out.region_embeds[0, 0], expected, rtol=1e-10, atol=1e-10)


def test_masked_out_frame_does_not_change_the_region_embedding():
    model = tiny_model().eval()
    generator = torch.Generator().manual_seed(3)
    pixels = torch.randn(2, 4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator, dtype=torch.float64)
    boxes = torch.tensor([0.1, 0.1, 0.6, 0.8], dtype=torch.float64).repeat(2, 3, 4, 1)
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[0, 1, 2] = False
    mask[1, 2] = False  # a region never visible
    with torch.no_grad():
        before = model.encode_video(pixels, boxes, mask).region_embeds
        changed_boxes = boxes.clone()
        changed_boxes[0, 1, 2] = torch.tensor([0.5, 0.5, 0.9, 0.9])
        changed_pixels = pixels.clone()
        changed_pixels[0, 2] = torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=generator, dtype=torch.float64)
        # Frame 2 of sample 0 differs now, but only region 1 is masked there; region 0 sees it.
        after = model.encode_video(changed_pixels, changed_boxes, mask).region_embeds
    torch.testing.assert_close(after[0, 1], before[0, 1], rtol=0, atol=1e-14)
    assert (after[0, 0] - before[0, 0]).abs().max() > 1e-6
    assert torch.equal(before[1, 2], torch.zeros_like(before[1, 2]))


def test_temperatures_start_from_clip_and_are_clamped():
    model = tiny_model()
    expected = model.clip.logit_scale.exp()
    for value in model.temperatures().values():
        torch.testing.assert_close(value, expected.to(value.dtype))
    with torch.no_grad():
        model.logit_scales["region"].fill_(10.0)
    assert float(model.temperatures()["region"].detach()) == 100.0


def test_gradient_checkpointing_gives_the_same_gradients():
    pixels = torch.randn(1, 2, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float64)
    boxes = torch.tensor([0.2, 0.2, 0.8, 0.8], dtype=torch.float64).expand(1, 1, 2, 4)
    ids = random_ids(torch.Generator().manual_seed(4), (2,), 30)
    grads, layer_runs = [], []
    for enabled in (False, True):
        model = tiny_model().train()
        model.set_gradient_checkpointing(enabled)
        runs = []
        model.clip.vision_model.encoder.layers[0].register_forward_pre_hook(lambda *args: runs.append(1))
        model.clip.text_model.encoder.layers[0].register_forward_pre_hook(lambda *args: runs.append(1))
        layer_runs.append(runs)
        out = model.encode_video(pixels, boxes, torch.ones(1, 1, 2, dtype=torch.bool))
        text = model.encode_text(ids, "long")
        (out.video_embeds @ text.t()).sum().add(out.region_embeds.sum()).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert len(layer_runs[1]) == 2 * len(layer_runs[0])  # checkpointed blocks ran again in backward
    for name, value in grads[0].items():
        torch.testing.assert_close(grads[1][name], value, rtol=1e-10, atol=1e-12)


def test_preprocess_resizes_and_normalises():
    model = tiny_model(dtype=torch.float32)
    frames = torch.randint(0, 256, (2, 3, 48, 40, 3), dtype=torch.uint8)
    pixels = model.preprocess(frames)
    assert pixels.shape == (2, 3, 3, IMAGE_SIZE, IMAGE_SIZE) and pixels.dtype == torch.float32
    same_size = torch.full((1, IMAGE_SIZE, IMAGE_SIZE, 3), 255, dtype=torch.uint8)
    white = model.preprocess(same_size)
    torch.testing.assert_close(white[0, :, 0, 0], (1 - model.image_mean) / model.image_std)
    with pytest.raises(ValueError, match="uint8"):
        model.preprocess(frames.float())


def test_loads_a_directory_written_by_transformers(hf_clip_dir):
    model = FGCLIPVideo.from_pretrained(hf_clip_dir).eval()
    tokenizer = load_tokenizer(hf_clip_dir)
    ids = tokenize(tokenizer, CAPTIONS, SHORT_TEXT_LENGTH)
    plain = CLIPModel.from_pretrained(str(hf_clip_dir)).eval()
    with torch.no_grad():
        expected = F.normalize(plain.get_text_features(input_ids=ids).pooler_output, dim=-1)
        torch.testing.assert_close(model.encode_text(ids, "short"), expected, rtol=1e-6, atol=1e-6)
    assert model.image_size == IMAGE_SIZE


def test_save_and_load_round_trip(hf_clip_dir, tmp_path):
    model = FGCLIPVideo.from_pretrained(hf_clip_dir)
    with torch.no_grad():  # extras away from their initial values, so loading them is tested
        for parameter in model.temporal.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        model.long_positions.ori.add_(0.1)
        model.long_positions.res.add_(-0.1)
        model.long_text_projection.weight.add_(0.01)
        model.logit_scales["hard"].add_(0.5)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = FGCLIPVideo.from_pretrained(tmp_path / "ckpt")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    tokenizer = load_tokenizer(tmp_path / "ckpt")  # tokenizer files travel with the checkpoint
    ids = tokenize(tokenizer, CAPTIONS, LONG_TEXT_LENGTH)
    pixels = torch.randn(1, 3, 3, IMAGE_SIZE, IMAGE_SIZE)
    boxes = torch.tensor([0.1, 0.1, 0.5, 0.9]).expand(1, 2, 3, 4)
    mask = torch.ones(1, 2, 3, dtype=torch.bool)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model.encode_text(ids, "long"), loaded.encode_text(ids, "long"))
        first, second = model.encode_video(pixels, boxes, mask), loaded.encode_video(pixels, boxes, mask)
    for name in ("video_embeds", "frame_embeds", "region_embeds"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert all(torch.equal(model.temperatures()[k], v) for k, v in loaded.temperatures().items())
    # Other tools still see a plain CLIP.
    assert CLIPModel.from_pretrained(str(tmp_path / "ckpt")).config.model_type == "clip"


def test_missing_or_non_clip_directory_fails_clearly(tmp_path):
    with pytest.raises(ModelDirError, match="model directory not found"):
        FGCLIPVideo.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ModelDirError, match="no config.json"):
        FGCLIPVideo.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelDirError, match="'bert', not 'clip'"):
        FGCLIPVideo.from_pretrained(tmp_path)


def test_tiny_preset_and_its_tokenizer(tmp_path):
    captions = CAPTIONS + ["A person in a red coat runs away from the burning car."]
    path = init_model("tiny", tmp_path / "tiny", captions=captions)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    clip = CLIPModel.from_pretrained(str(path))
    assert clip.config.vision_config.image_size == 112
    assert clip.config.text_config.eos_token_id == tokenizer.eos_token_id
    # Any text tokenizes, words never seen included (byte fallback), and decodes back.
    strange = "Xylophone quokkas 抢劫 zebra-crossing!"
    ids = tokenize(tokenizer, [strange], SHORT_TEXT_LENGTH)
    assert tokenizer.decode(ids[0], skip_special_tokens=True).strip() == strange.lower()
    assert ids[0, 0] == tokenizer.bos_token_id and tokenizer.eos_token_id in ids[0].tolist()
    model = FGCLIPVideo.from_pretrained(path).eval()
    frames = torch.randint(0, 256, (1, 2, 112, 112, 3), dtype=torch.uint8)
    with torch.no_grad():
        out = model.encode_video(model.preprocess(frames), torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(1, 1, 2, 4),
                                 torch.ones(1, 1, 2, dtype=torch.bool))
        text = model.encode_text(tokenize(tokenizer, captions, LONG_TEXT_LENGTH), "long")
    assert out.video_embeds.shape == (1, model.embed_dim) and text.shape == (4, model.embed_dim)


def test_init_model_command(tmp_path):
    annotations = tmp_path / "train.json"
    annotations.write_text(json.dumps([{"video": "a.mp4", "global_caption": CAPTIONS[0], "region_captions": CAPTIONS[1:],
                                        "box_infos": [[], []], "hard_negatives": [["a woman walks"], []]}]))
    out = tmp_path / "model"
    result = CliRunner().invoke(cli, ["init-model", "--preset", "tiny", "--out", str(out), "--captions", str(annotations)])
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file() and (out / "preprocessor_config.json").is_file()
    again = CliRunner().invoke(cli, ["init-model", "--out", str(out)])
    assert again.exit_code != 0 and "already holds a model" in again.output
    missing = CliRunner().invoke(cli, ["init-model", "--out", str(tmp_path / "m2"), "--captions", str(tmp_path / "no.json")])
    assert missing.exit_code != 0 and "no.json" in missing.output and "Traceback" not in missing.output
