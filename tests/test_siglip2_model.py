"""The FG-CLIP 2 family: a tiny checkpoint in FG-CLIP 2's layout loads with every tensor used, and
its text embeddings (short, box, long), frame embeddings and dense features equal a reference
computed from the same state dict with transformers' own SigLIP 2 classes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import Siglip2Model, Siglip2TextConfig, Siglip2TextModel
from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches
from transformers.models.siglip2.modeling_siglip2 import Siglip2MultiheadAttentionPoolingHead

from fgclip.models import fgclip2_layout
from fgclip.models.families import family_of, load_video_model
from fgclip.models.clip_video import ModelDirError
from fgclip.models.siglip2_video import FGCLIP2Video
from tiny_fgclip import IMAGE_SIZE, PATCH_SIZE, random_ids, tiny_siglip2_config

TEXT_POSITIONS = 32
KEEP_LEN = 20
LONG_ROWS = 4 * TEXT_POSITIONS - 3 * KEEP_LEN


def _fgclip2_checkpoint(path, seed: int = 0) -> dict[str, torch.Tensor]:
    """An FG-CLIP 2-layout directory written without our model code: SigLIP 2's weights plus random
    FG-CLIP 2 additions under FG-CLIP 2's names, config.json as FG-CLIP 2 writes it."""
    torch.manual_seed(seed)
    config = tiny_siglip2_config(TEXT_POSITIONS)
    siglip = Siglip2Model(config)
    width = config.text_config.hidden_size
    tensors = {name: value.clone() for name, value in siglip.state_dict().items()}
    additions = {
        "text_model.embeddings.position_embedding_ori.weight": torch.randn(LONG_ROWS, width),
        "text_model.embeddings.position_embedding_res.weight": torch.randn(LONG_ROWS, width),
        "longtext_head.weight": torch.randn(width, width) / width ** 0.5, "longtext_head.bias": torch.randn(width),
        "boxtext_head.weight": torch.randn(width, width) / width ** 0.5, "boxtext_head.bias": torch.randn(width),
    }
    dense_head = Siglip2MultiheadAttentionPoolingHead(config.vision_config)
    for name, value in dense_head.state_dict().items():
        additions[f"dense_feature_head.{name}"] = value + 0.1 * torch.randn(value.shape)
    tensors.update(additions)
    tensors["logit_scale"] = torch.tensor([2.3])
    tensors["logit_bias"] = torch.tensor([-9.0])
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "model.safetensors"))
    text = config.text_config.to_dict() | {"model_type": "fgclip2_text_model", "keep_len": KEEP_LEN, "longtext_len": LONG_ROWS}
    vision = config.vision_config.to_dict() | {"model_type": "fgclip2_vision_model"}
    (path / "config.json").write_text(json.dumps({
        "architectures": ["FG_CLIP2_Model"], "model_type": "fgclip2", "text_config": text, "vision_config": vision,
        "auto_map": {"AutoModel": "modeling_fgclip2.FG_CLIP2_Model"}}))
    return tensors


def _reference_towers(tensors: dict[str, torch.Tensor]) -> Siglip2Model:
    siglip = Siglip2Model(tiny_siglip2_config(TEXT_POSITIONS)).eval()
    own = {name: value for name, value in tensors.items() if not fgclip2_layout.is_addition(name)}
    siglip.load_state_dict(own, strict=True)
    return siglip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("fgclip2")
    return path, _fgclip2_checkpoint(path)


def test_fgclip2_layout_loads_with_every_tensor_used(checkpoint, tmp_path):
    path, tensors = checkpoint
    assert family_of(path) == "siglip2"
    model = load_video_model(path)
    assert isinstance(model, FGCLIP2Video)
    loaded = model.fgclip2_state_dict()
    assert set(loaded) == set(tensors)
    for name, value in tensors.items():
        assert torch.equal(loaded[name], value), name
    assert model.text_rules.long_length == LONG_ROWS and model.text_rules.short_length == TEXT_POSITIONS
    # Before any training, the region and hard terms start from the global scale and bias.
    assert torch.allclose(model.temperatures()["region"], torch.tensor(2.3).exp())
    assert float(model.logit_biases()["hard"].detach()) == pytest.approx(-9.0)

    # A tensor the model does not have, or one missing, is refused by name.
    for change, word in (({**tensors, "text_model.extra.weight": torch.zeros(1)}, "text_model.extra.weight"),
                         ({k: v for k, v in tensors.items() if k != "boxtext_head.bias"}, "boxtext_head.bias")):
        broken = tmp_path / word
        broken.mkdir()
        (broken / "config.json").write_text((path / "config.json").read_text())
        save_file({k: v.contiguous() for k, v in change.items()}, str(broken / "model.safetensors"))
        with pytest.raises(ModelDirError, match=word.replace(".", r"\.")):
            FGCLIP2Video.from_pretrained(broken)


def test_embeddings_equal_transformers_siglip2_reference(checkpoint):
    path, tensors = checkpoint
    model = FGCLIP2Video.from_pretrained(path).eval()
    siglip = _reference_towers(tensors)
    generator = torch.Generator().manual_seed(3)
    short_ids = random_ids(generator, (4,), TEXT_POSITIONS)
    long_ids = random_ids(generator, (3,), LONG_ROWS)
    pixels = torch.randn(5, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)

    with torch.no_grad():
        # short: SigLIP 2's own text features (last token -> text_model.head)
        expected_short = F.normalize(siglip.get_text_features(input_ids=short_ids).pooler_output, dim=-1)
        # box: last token's hidden state -> boxtext_head
        last = siglip.text_model(input_ids=short_ids).last_hidden_state[:, -1]
        expected_box = F.normalize(F.linear(last, tensors["boxtext_head.weight"], tensors["boxtext_head.bias"]), dim=-1)
        # long: a SigLIP 2 text tower with 196-style positions (ori below keep_len, res after) -> longtext_head
        long_config = Siglip2TextConfig(**(tiny_siglip2_config(TEXT_POSITIONS).text_config.to_dict()
                                           | {"max_position_embeddings": LONG_ROWS}))
        long_tower = Siglip2TextModel(long_config).eval()
        long_state = {name[len("text_model."):]: value for name, value in tensors.items()
                      if name.startswith("text_model.") and not fgclip2_layout.is_addition(name)}
        long_state["embeddings.position_embedding.weight"] = torch.cat([
            tensors["text_model.embeddings.position_embedding_ori.weight"][:KEEP_LEN],
            tensors["text_model.embeddings.position_embedding_res.weight"][KEEP_LEN:]])
        long_tower.load_state_dict(long_state, strict=True)
        long_last = long_tower(input_ids=long_ids).last_hidden_state[:, -1]
        expected_long = F.normalize(F.linear(long_last, tensors["longtext_head.weight"], tensors["longtext_head.bias"]), dim=-1)

        # images: transformers' patchification and NaFlex inputs, vision tower, pooling head
        patches = torch.stack([convert_image_to_patches(image, PATCH_SIZE) for image in pixels])
        grid = IMAGE_SIZE // PATCH_SIZE
        vision = siglip.vision_model(pixel_values=patches, pixel_attention_mask=torch.ones(5, grid * grid, dtype=torch.long),
                                     spatial_shapes=torch.tensor([[grid, grid]] * 5))
        expected_frames = F.normalize(vision.pooler_output, dim=-1)
        # dense: FG-CLIP 2's dense_feature_head with every patch as a query
        dense_head = Siglip2MultiheadAttentionPoolingHead(siglip.config.vision_config).eval()
        dense_head.load_state_dict({name[len("dense_feature_head."):]: value for name, value in tensors.items()
                                    if name.startswith("dense_feature_head.")})
        hidden = vision.last_hidden_state
        attended = dense_head.attention(hidden, hidden, hidden)[0]
        dense = attended + dense_head.mlp(dense_head.layernorm(attended))
        expected_dense = F.normalize(dense, dim=-1).transpose(1, 2).reshape(5, -1, grid, grid)

        tolerance = dict(rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.encode_text(short_ids, "short"), expected_short, **tolerance)
        torch.testing.assert_close(model.encode_text(short_ids, "box"), expected_box, **tolerance)
        torch.testing.assert_close(model.encode_text(long_ids, "long"), expected_long, **tolerance)
        torch.testing.assert_close(model.encode_frames(pixels), expected_frames, **tolerance)
        torch.testing.assert_close(model.dense_features(pixels), expected_dense, **tolerance)
        # the three heads are different functions of the same tower
        assert not torch.allclose(expected_short, expected_box, atol=1e-3)


def test_export_writes_fgclip2_layout_back(checkpoint, tmp_path):
    path, tensors = checkpoint
    model = FGCLIP2Video.from_pretrained(path)
    model.save_pretrained(tmp_path / "ours")  # a checkpoint of ours: FG-CLIP 2 layout + our extras
    model.save_pretrained(tmp_path / "export", with_extras=False)
    exported = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert set(exported) == set(tensors)
    assert all(torch.equal(exported[name], value) for name, value in tensors.items())
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["model_type"] == "fgclip2" and config["auto_map"] == {"AutoModel": "modeling_fgclip2.FG_CLIP2_Model"}
    assert (config["text_config"]["keep_len"], config["text_config"]["longtext_len"]) == (KEEP_LEN, LONG_ROWS)
    assert not (tmp_path / "export" / "fgclip_video.safetensors").exists()
    again = FGCLIP2Video.from_pretrained(tmp_path / "ours")
    for name, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), name


def test_export_model_command_writes_fgclip2_layout_and_round_trips(checkpoint, tmp_path):
    from fgclip.models.export import export_model
    from fgclip.models.factory import train_gemma_tokenizer

    path, tensors = checkpoint
    model = FGCLIP2Video.from_pretrained(path)
    ours = tmp_path / "ours"
    model.save_pretrained(ours)  # a checkpoint of ours, then the tokenizer a real one carries
    train_gemma_tokenizer(["a man runs", "two men fight"], 300, TEXT_POSITIONS).save_pretrained(str(ours))
    summary = export_model(ours, tmp_path / "export", "fgclip2")
    exported = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert set(exported) == set(tensors) and summary.tensors == len(tensors) and summary.beside > 0
    assert json.loads((tmp_path / "export" / "config.json").read_text())["model_type"] == "fgclip2"
    assert (tmp_path / "export" / "tokenizer.json").is_file()
    again = FGCLIP2Video.from_pretrained(tmp_path / "export")
    for name, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), name
    with pytest.raises(ModelDirError, match="siglip2-family model cannot be written as 'fgclip'.*fgclip2"):
        export_model(ours, tmp_path / "v1", "fgclip")


def test_plain_siglip2_directory_starts_the_additions_as_fgclip2_does(tmp_path):
    torch.manual_seed(1)
    Siglip2Model(tiny_siglip2_config(TEXT_POSITIONS)).save_pretrained(tmp_path)
    model = FGCLIP2Video.from_pretrained(tmp_path)
    state = model.state_dict()
    for head in ("boxtext_head", "longtext_head"):
        assert torch.equal(state[f"{head}.weight"], state["text_model.head.weight"])
    assert torch.equal(state["dense_feature_head.probe"], state["vision_model.head.probe"])
    ori = state["text_model.embeddings.position_embedding_ori.weight"]
    assert ori.shape[0] == LONG_ROWS and torch.equal(ori[:KEEP_LEN], state["text_model.embeddings.position_embedding.weight"][:KEEP_LEN])
    assert torch.equal(ori, state["text_model.embeddings.position_embedding_res.weight"])


def test_tiny_siglip2_preset_has_a_gemma_tokenizer_trained_on_the_captions(tmp_path):
    """`init-model --preset tiny-siglip2`: FG-CLIP 2's layout, a tokenizer that loads as
    transformers' GemmaTokenizer offline, captions lower-cased and padded to the full length, and
    Chinese words of the captions as tokens of their own (no byte fallback)."""
    from fgclip.models.families import load_model_and_tokenizer
    from fgclip.models.factory import init_model

    captions = ["A surveillance video of explosion: a bright flash bursts.", "a red person walking left",
                "一段爆炸的监控视频：一道强光炸开，一个人跑开。", "一个红色的人向左走"] * 4
    path = init_model("tiny-siglip2", tmp_path / "model", captions=captions)
    assert json.loads((path / "config.json").read_text())["model_type"] == "fgclip2"
    assert json.loads((path / "tokenizer_config.json").read_text())["tokenizer_class"] == "GemmaTokenizer"
    model, tokenizer = load_model_and_tokenizer(path)
    assert type(tokenizer).__name__ == "GemmaTokenizer" and isinstance(model, FGCLIP2Video)
    rules = model.text_rules
    ids = rules.ids(tokenizer, ["A RED Person walking left", "一个红色的人向左走"], "box")
    assert ids.shape == (2, rules.short_length) and rules.long_length == 4 * rules.short_length - 60
    assert torch.equal(ids[0], rules.ids(tokenizer, ["a red person walking left"], "box")[0])  # lower-cased
    assert ids[0, 0] == tokenizer.bos_token_id and ids[0, -1] == tokenizer.pad_token_id  # padded at the end
    pieces = tokenizer.convert_ids_to_tokens(ids[1][ids[1] != tokenizer.pad_token_id].tolist())
    assert not any(piece.startswith("<0x") for piece in pieces), pieces
    assert "▁red" in tokenizer.convert_ids_to_tokens(ids[0].tolist())  # merges stay inside words
    # the from-scratch start: a dense head that starts local
    attention = model.dense_feature_head.attention
    assert torch.equal(attention.out_proj.weight, torch.eye(attention.embed_dim))
