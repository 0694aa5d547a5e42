"""The ablation knobs of stage 1 and the loader, on real shards (real ffmpeg on the shared clips):
window strategy (annotated / whole video / a random clip per epoch), the region cap, and the
policy for regions without boxes (whole-frame pseudo box / masked out / record dropped)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fgclip.cli import main as cli
from fgclip.models.clip_video import FGCLIPVideo
from fgclip.models.text import load_tokenizer
from fgclip.train.loader import ShardLoader
from fgclip.train.loader_worker import clip_rows
from pipeline.annotations import AnnotationRecord, Keyframe, Region
from pipeline.frames import FramesError, build_shards
from pipeline.record_policy import RecordPolicy, RecordPolicyError
from pipeline.shards import ShardReader, list_shards, read_manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLIP_NAMES = {
    "Abuse/Abuse901_x264.mp4": "vtest_campus_cctv.mp4",  # 480x360, 10 fps, 795 frames
    "Training_Normal_Videos_Anomaly/Normal_Videos901_x264.mp4": "car_traffic.mp4",  # 30.19 fps, 917 frames
    "Arrest/Arrest901_x264.avi": "megamind_xvid.avi",  # 23.98 fps, 270 frames
}
VTEST, CAR, FILM = list(CLIP_NAMES)
BOX_A = (0.1, 0.2, 0.4, 0.6)
BOX_B = (0.5, 0.3, 0.9, 0.9)
T = 8
SIZE = 32


@pytest.fixture(scope="module")
def video_root(link_real_clips, tmp_path_factory) -> Path:
    return link_real_clips(tmp_path_factory.mktemp("ucf"), CLIP_NAMES)


def record(index: int, video: str, window_s=None, regions=()) -> AnnotationRecord:
    label = video.split("/")[0].replace("Training_Normal_Videos_Anomaly", "Normal")
    return AnnotationRecord(index, video, f"caption {index}", tuple(regions), window_s, label, label != "Normal")


RECORDS = [
    # boxed, boxless, boxed, boxless regions inside the window [20, 45.5] s = frames [200, 455)
    record(0, VTEST, (20.0, 45.5), [
        Region("a person walks", (Keyframe(300, BOX_A), Keyframe(400, BOX_B))),
        Region("the whole scene", ()),
        Region("a bag", (Keyframe(240, BOX_B), Keyframe(260, BOX_A))),
        Region("the street", ()),
    ]),
    record(1, CAR, (3.3, 7.0), [Region("cars pass", ())]),  # a record without boxes
    record(2, FILM),  # no regions at all
]


def build(video_root: Path, out: Path, policy: RecordPolicy) -> dict:
    build_shards(RECORDS, video_root=video_root, out_dirs={T: out}, size=SIZE, records_per_shard=4, workers=1,
                 source_json="x.json", source_sha256="abc", progress=False, policy=policy)
    stored = {}
    for path in list_shards(out):
        with ShardReader(path) as reader:
            for i in range(reader.num_records):
                rec = reader.read_record(i)
                stored[rec.record_index] = rec
    return stored


def test_window_strategy_whole_video_ignores_the_timestamps(video_root, tmp_path):
    annotated = build(video_root, tmp_path / "annotated", RecordPolicy())
    whole = build(video_root, tmp_path / "whole", RecordPolicy(window="whole-video"))
    k = np.arange(T)
    np.testing.assert_array_equal(annotated[0].frame_index, 200 + (2 * k + 1) * 255 // (2 * T))
    np.testing.assert_array_equal(whole[0].frame_index, (2 * k + 1) * 795 // (2 * T))
    assert whole[0].window_s == pytest.approx((0.0, 79.5)) and annotated[0].window_s == pytest.approx((20.0, 45.5))
    assert whole[1].window_s[0] == 0.0 and whole[1].frame_index.max() > 7.0 * 30.19  # past the annotated end
    # the boxes follow the keyframes on the new samples (interpolated at frame 300..400, masked far away)
    visible = whole[0].box_mask[0]
    assert visible.any() and not visible.all()
    assert "record_policy" not in read_manifest(tmp_path / "annotated")
    assert read_manifest(tmp_path / "whole")["record_policy"] == {"window": "whole-video", "boxless": "whole-frame",
                                                                  "max_regions": None}
    # a directory of another policy is refused, not mixed
    with pytest.raises(FramesError, match="record_policy"):
        build(video_root, tmp_path / "whole", RecordPolicy())


def test_boxless_regions_whole_frame_mask_or_drop(video_root, tmp_path):
    whole_frame = build(video_root, tmp_path / "whole-frame", RecordPolicy())
    assert whole_frame[0].region_captions == ["a person walks", "the whole scene", "a bag", "the street"]
    assert whole_frame[0].box_mask[1].all() and (whole_frame[0].boxes[1] == [0, 0, 1, 1]).all()
    assert whole_frame[1].region_captions == ["cars pass"] and whole_frame[1].box_mask.all()

    masked = build(video_root, tmp_path / "mask", RecordPolicy(boxless="mask"))
    assert masked[0].region_captions == ["a person walks", "a bag"]
    np.testing.assert_array_equal(masked[0].box_mask, whole_frame[0].box_mask[[0, 2]])
    assert masked[1].region_captions == [] and masked[1].boxes.shape[0] == 0  # kept for the video-caption loss
    assert sorted(masked) == [0, 1, 2]
    dropped = read_manifest(tmp_path / "mask")["dropped_regions"]
    assert [(d["record_index"], d["region"]) for d in dropped] == [(0, 1), (0, 3), (1, 0)]
    assert all("--boxless mask" in d["reason"] for d in dropped)

    kept = build(video_root, tmp_path / "drop", RecordPolicy(boxless="drop"))
    assert sorted(kept) == [0] and kept[0].region_captions == ["a person walks", "a bag"]
    manifest = read_manifest(tmp_path / "drop")
    assert [(s["record_index"], s["kind"]) for s in manifest["skipped"]] == [(1, "no-boxes"), (2, "no-boxes")]
    assert "--boxless drop" in manifest["skipped"][0]["reason"]


def test_region_cap_keeps_the_first_regions_and_lists_the_rest(video_root, tmp_path):
    one = build(video_root, tmp_path / "one", RecordPolicy(max_regions=1))
    assert one[0].region_captions == ["a person walks"] and one[0].box_mask.shape == (1, T)
    assert one[1].region_captions == ["cars pass"]
    dropped = read_manifest(tmp_path / "one")["dropped_regions"]
    assert [(d["record_index"], d["region"]) for d in dropped] == [(0, 1), (0, 2), (0, 3)]
    assert all("cap of 1" in d["reason"] for d in dropped)
    # the cap counts regions the boxless policy kept
    capped = build(video_root, tmp_path / "two-masked", RecordPolicy(boxless="mask", max_regions=2))
    assert capped[0].region_captions == ["a person walks", "a bag"]
    with pytest.raises(RecordPolicyError, match="at least 1"):
        RecordPolicy(max_regions=0)
    with pytest.raises(RecordPolicyError, match="window strategy"):
        RecordPolicy(window="random")


def test_cli_options_reach_the_shards(video_root, shared_data, tmp_path):
    raw = [{"video": VTEST, "global_caption": "people walk by", "region_captions": ["a person", "the square"],
            "box_infos": [[{"frame": 300, "bbox": list(BOX_A)}], []], "timestamps": [20.0, 45.5]},
           {"video": CAR, "global_caption": "cars pass", "region_captions": ["a car"], "box_infos": [[]],
            "timestamps": None}]
    annotations = tmp_path / "train.json"
    annotations.write_text(json.dumps(raw))
    result = CliRunner().invoke(cli, [
        "frames", str(annotations), "--video-root", str(video_root), "--out", str(tmp_path / "out"), "--size", "16",
        "-t", "4", "--workers", "1", "--test-split", str(shared_data / "ucf" / "Anomaly_Test.txt"),
        "--window", "whole-video", "--boxless", "drop", "--max-regions", "1"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "out" / "train_t4")
    assert manifest["record_policy"] == {"window": "whole-video", "boxless": "drop", "max_regions": 1}
    assert [s["kind"] for s in manifest["skipped"]] == ["no-boxes"]
    assert "1 records in 1 shards (T=4), 1 skipped (1 no-boxes), 1 regions dropped" in result.output
    # the knobs are for training shards: test mode refuses them by name
    result = CliRunner().invoke(cli, ["frames", "--test-list", str(annotations), "--window", "whole-video"])
    assert result.exit_code == 2 and "--window" in result.output


# --- a random clip of T consecutive stored frames per epoch (the loader) ----------------------


def test_clip_rows_are_consecutive_seeded_and_move_between_epochs():
    rows = clip_rows(8, 3, seed=1, epoch=0, position=5)
    assert len(rows) == 3 and np.all(np.diff(rows) == 1) and 0 <= rows[0] <= 5
    np.testing.assert_array_equal(rows, clip_rows(8, 3, seed=1, epoch=0, position=5))
    starts = {int(clip_rows(8, 3, seed=1, epoch=e, position=5)[0]) for e in range(20)}
    assert len(starts) > 1
    np.testing.assert_array_equal(clip_rows(8, 8, seed=1, epoch=3, position=0), np.arange(8))
    with pytest.raises(ValueError):
        clip_rows(4, 8, seed=0, epoch=0, position=0)


def test_loader_reads_a_random_clip_per_epoch_from_real_shards(video_root, model_dir, tmp_path):
    stored = build(video_root, tmp_path / "whole", RecordPolicy(window="whole-video"))
    model, tokenizer = FGCLIPVideo.from_pretrained(model_dir), load_tokenizer(model_dir)
    loader = ShardLoader(tmp_path / "whole", model=model, tokenizer=tokenizer, batch_size=3, num_frames=3, num_workers=1,
                         device="cpu", seed=5, frame_selection="random-clip")
    with loader:
        clips = {}
        for epoch in range(4):
            loader.set_epoch(epoch)
            for batch in loader:
                for row, index in enumerate(batch["record_index"].tolist()):
                    position = next(p for p, m in enumerate(loader.metas) if m.record_index == index)
                    rows = clip_rows(T, 3, seed=5, epoch=epoch, position=position)
                    # the boxes (and so the frames) read are those of the drawn clip
                    expected = stored[index].box_mask[:, rows]
                    np.testing.assert_array_equal(batch["box_mask"][row, :expected.shape[0]].numpy(), expected)
                    clips.setdefault(index, set()).add(int(rows[0]))
        assert any(len(starts) > 1 for starts in clips.values())
    with pytest.raises(ValueError, match="frame_selection"):
        ShardLoader(tmp_path / "whole", model=model, tokenizer=tokenizer, batch_size=3, num_frames=3, num_workers=0,
                    device="cpu", seed=5, frame_selection="random")
